/**
 * MeshCopy (workers/gateway/model-copy.ts) against a fake mesh: two orders to copy one model
 * onto one processor at once (the reconcile loop and placement, say) make one copy, joined,
 * yet each is held to its own digest and cancel;
 * a holder whose file has another digest than asked is passed over for the next one.
 */
import test from 'brittle'
import { LogFacility } from '../../../facilities/log.facility.js'
import type { NetFacility } from '../../../facilities/net/net.facility.js'
import type { ProcessorEntry } from '../../../facilities/router/processor-entry.js'
import type { RouterFacility } from '../../../facilities/router/router.facility.js'
import { CancelToken } from '../../../kernel/cancel.js'
import { MeshError } from '../../../kernel/errors.js'
import { MeshCopy } from '../../../workers/gateway/model-copy.js'
import type { GatewayPullRequest, PullOutcome } from '../../../workers/gateway/model-pull.js'
import { llamaEntry } from '../../helpers/processor-entries.js'

const logger = new LogFacility({ level: 'silent' }).logger

const entry = llamaEntry

/** A mesh of `entries` whose holders' files have the digests in `digests` (by entry number). */
function fakeGateway(entries: ProcessorEntry[], digests: Map<number, string>, gate: Promise<void>) {
  const calls: string[] = []
  const router = {
    live: () => entries,
    beatNow: async () => {},
  } as unknown as RouterFacility
  const net = {
    peer: (key: Buffer) => {
      const n = key[0] as number
      const call = async (
        method: string,
        payload: { model?: string; manifest?: { name: string } },
        opts?: { cancel?: CancelToken },
      ) => {
        calls.push(`${method} on ${n}`)
        if (method === 'modelPublish') {
          const sha256 = digests.get(n) ?? 'a'.repeat(64)
          return { name: `${payload.model}.gguf`, key: 'k'.repeat(64), sha256, size: 1 }
        }
        if (method === 'modelShare') return {}
        if (method === 'models') return { models: [{ name: 'm', digest: digests.get(n) ?? 'a'.repeat(64) }] }
        await new Promise<void>((resolve, reject) => {
          gate.then(resolve)
          opts?.cancel?.onAbort(() => reject(MeshError.cancelled()))
        })
        entries.find((e) => e.publicKey.equals(key))?.models.add('m')
        return { model: 'm', digest: 'sha256:x', size: 1, wireBytes: 1 }
      }
      return { request: call, stream: call }
    },
  } as unknown as NetFacility
  const gateway = { router, net, log: logger }
  // One gateway's copies under way, as its GatewayModelPull keeps them.
  const underWay = new Map<string, Promise<PullOutcome>>()
  const order = (req: GatewayPullRequest, cancel: CancelToken) => new MeshCopy(gateway, req, cancel, underWay)
  return { order, calls }
}

test('mesh copy: two orders for one copy at once make one copy; both get its outcome', async (t) => {
  let open = () => {}
  const gate = new Promise<void>((resolve) => {
    open = resolve
  })
  const holder = entry(1, ['m'])
  const target = entry(2, [])
  const { order, calls } = fakeGateway([holder, target], new Map(), gate)
  const a = order({ model: 'm', to: [target.id] }, new CancelToken()).copyTo(target, () => {})
  const b = order({ model: 'm', to: [target.id] }, new CancelToken()).copyTo(target, () => {})
  open()
  const [ra, rb] = await Promise.all([a, b])
  t.ok(ra.ok && rb.ok, 'both ok')
  t.alike(calls, ['modelPublish on 1', 'modelShare on 1', 'modelFetch on 2'], 'one copy')
  target.models.delete('m')
  const again = await order({ model: 'm', to: [target.id] }, new CancelToken()).copyTo(target, () => {})
  t.ok(again.ok, 'once it ended, a new order copies again')
  t.is(calls.filter((c) => c === 'modelFetch on 2').length, 2)
})

test('mesh copy: with a digest, a holder whose file differs is passed over; none has it: ERR_DIGEST_MISMATCH', async (t) => {
  const good = 'b'.repeat(64)
  const other = entry(1, ['m'])
  const right = entry(3, ['m'])
  const target = entry(2, [])
  const digests = new Map([
    [1, 'c'.repeat(64)],
    [3, good],
  ])
  const { order, calls } = fakeGateway([other, right, target], digests, Promise.resolve())
  const req = { model: 'm', to: [target.id], digest: `sha256:${good}` }
  const r = await order(req, new CancelToken()).copyTo(target, () => {})
  t.ok(r.ok, 'copied')
  t.ok(calls.includes('modelShare on 3') && !calls.includes('modelShare on 1'), calls.join(', '))

  const none = entry(4, [])
  const { order: order2 } = fakeGateway([other, none], digests, Promise.resolve())
  const bad = await order2({ model: 'm', to: [none.id], digest: `sha256:${good}` }, new CancelToken()).copyTo(
    none,
    () => {},
  )
  t.is(!bad.ok && bad.error.code, 'ERR_DIGEST_MISMATCH')
})

test('mesh copy: with a digest, a processor that already lists the model must have that digest', async (t) => {
  const good = 'b'.repeat(64)
  const target = entry(2, ['m'])
  const { order, calls } = fakeGateway([target], new Map([[2, good]]), Promise.resolve())
  const same = await order(
    { model: 'm', to: [target.id], digest: `sha256:${good}` },
    new CancelToken(),
  ).copyTo(target, () => {})
  t.ok(same.ok && same.wireBytes === 0, 'there already: nothing moved')
  const other = await order(
    { model: 'm', to: [target.id], digest: `sha256:${'c'.repeat(64)}` },
    new CancelToken(),
  ).copyTo(target, () => {})
  t.is(!other.ok && other.error.code, 'ERR_CONFLICT', 'another digest there: ERR_CONFLICT')
  t.absent(calls.includes('modelFetch on 2'), 'no copy over it')
})

test('mesh copy: a joined copy cancelled by its first caller is ordered again for the other; a joiner asking another digest gets ERR_CONFLICT', async (t) => {
  let open = () => {}
  const gate = new Promise<void>((resolve) => {
    open = resolve
  })
  const holder = entry(1, ['m'])
  const target = entry(2, [])
  const { order, calls } = fakeGateway([holder, target], new Map([[2, 'a'.repeat(64)]]), gate)
  const firstCancel = new CancelToken()
  const first = order({ model: 'm', to: [target.id] }, firstCancel).copyTo(target, () => {})
  const second = order({ model: 'm', to: [target.id] }, new CancelToken()).copyTo(target, () => {})
  const strict = order(
    { model: 'm', to: [target.id], digest: `sha256:${'c'.repeat(64)}` },
    new CancelToken(),
  ).copyTo(target, () => {})
  firstCancel.abort()
  const r1 = await first
  t.is(!r1.ok && r1.error.code, 'ERR_CANCELLED', "the first caller's copy is cancelled")
  open()
  const [r2, r3] = await Promise.all([second, strict])
  t.ok(r2.ok, 'the other caller, not cancelled, gets its copy')
  t.is(
    calls.filter((c) => c === 'modelFetch on 2').length,
    2,
    'ordered again once (the strict order joined it)',
  )
  t.is(!r3.ok && r3.error.code, 'ERR_CONFLICT', 'the copy has another digest than the strict order asked')
})
