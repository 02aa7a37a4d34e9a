/**
 * The desired-state loop (workers/gateway/model-reconcile-loop.ts) against fake processors:
 * one copy per model at a time and `maxCopies` in all, a failed copy backs off and goes
 * elsewhere, loads go to the holders with no keep-alive expiry, and a processor joining
 * (the router's `added`) starts a round at once.
 */
import { EventEmitter } from 'node:events'
import test from 'brittle'
import { pino } from 'pino'
import type { Logger } from '../../../facilities/log.facility.js'
import type { NetFacility } from '../../../facilities/net/net.facility.js'
import type { RouterFacility } from '../../../facilities/router/router.facility.js'
import type { GatewayPullRequest, PullSummary } from '../../../workers/gateway/model-pull.js'
import { ReconcileLoop } from '../../../workers/gateway/model-reconcile-loop.js'
import type { DesiredModel } from '../../../workers/gateway/model-reconciler.js'
import type { HeldModel } from '../../../workers/processor/model-admin.js'

/** Polls `check` until true or `timeoutMs` (the mesh helpers' own, without importing a mesh). */
async function until(check: () => boolean, timeoutMs: number, stepMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (check()) return true
    await new Promise((r) => setTimeout(r, stepMs))
  }
  return false
}

interface Fake {
  key: string
  held: Map<string, boolean>
}

function mesh(keys: string[]) {
  const procs = new Map<string, Fake>(keys.map((key) => [key, { key, held: new Map() }]))
  const events = new EventEmitter()
  const entries = () =>
    [...procs.values()].map((p) => ({
      id: p.key,
      models: new Set(p.held.keys()),
      active: 0,
      queued: 0,
      backend: 'llamacpp',
    }))
  const router = { events, live: entries } as unknown as RouterFacility
  const gather = async () =>
    [...procs.values()].map((p) => ({
      view: { processor: p.key, state: 'serving' as const, backend: 'llamacpp' },
      models: [...p.held].map(([name, loaded]) => ({ name, loaded }) as HeldModel),
    }))
  const loads: string[] = []
  const net = {
    peer: (key: Buffer) => ({
      request: async (method: string, payload: { model: string; keepAliveMs: number }) => {
        loads.push(`${method} ${payload.model} ${key.toString('hex')} ${payload.keepAliveMs}`)
        procs.get(key.toString('hex'))?.held.set(payload.model, true)
        return { loaded: true }
      },
    }),
  } as unknown as NetFacility
  return { procs, events, router, gather, net, loads }
}

/** A pull that waits until the test settles it. */
function pulls(m: ReturnType<typeof mesh>) {
  const calls: { model: string; to: string; settle: (ok: boolean) => void }[] = []
  let inFlight = 0
  let most = 0
  const run = (_actor: unknown, req: GatewayPullRequest): Promise<PullSummary> =>
    new Promise((resolve) => {
      const to = (req.to as string[])[0] as string
      inFlight++
      most = Math.max(most, inFlight)
      calls.push({
        model: req.model,
        to,
        settle: (ok) => {
          inFlight--
          if (ok) m.procs.get(to)?.held.set(req.model, false)
          const error = { code: 'ERR_BAD_REQUEST', message: 'source must be an http(s):// URL' }
          resolve({
            model: req.model,
            results: [
              ok ? { processor: to, ok: true, model: req.model } : { processor: to, ok: false, error },
            ],
          })
        },
      })
    })
  return { calls, run, most: () => most, inFlight: () => inFlight }
}

const log = pino({ level: 'silent' }) as unknown as Logger

function loopOf(
  m: ReturnType<typeof mesh>,
  pull: ReturnType<typeof pulls>,
  desired: DesiredModel[],
  maxCopies: number,
) {
  return new ReconcileLoop({
    reconcileMs: 20,
    maxCopies,
    router: () => m.router,
    net: () => m.net,
    log: () => log,
    gather: m.gather,
    pull,
    desired: () => desired,
  })
}

test('loop: one copy per model at a time, maxCopies in all, until every model has its replicas', async (t) => {
  const m = mesh(['aa', 'bb', 'cc', 'dd', 'ee'])
  m.procs.get('aa')?.held.set('m1', false)
  m.procs.get('aa')?.held.set('m2', false)
  const pull = pulls(m)
  const loop = loopOf(
    m,
    pull,
    [
      { model: 'm1', replicas: 3 },
      { model: 'm2', replicas: 3 },
    ],
    1,
  )
  t.teardown(() => loop.stop())
  loop.start()
  for (let i = 0; i < 4; i++) {
    t.ok(await until(() => pull.calls.length === i + 1, 2_000, 5), `copy ${i + 1} starts`)
    await new Promise((r) => setTimeout(r, 100))
    t.is(pull.inFlight(), 1, 'and no other while it runs (maxCopies 1)')
    pull.calls[i]?.settle(true)
  }
  await new Promise((r) => setTimeout(r, 150))
  t.is(pull.calls.length, 4, 'four copies: two for each model, no more')
  t.is(pull.most(), 1)
  for (const model of ['m1', 'm2']) {
    const holders = [...m.procs.values()].filter((p) => p.held.has(model)).length
    t.is(holders, 3, `${model} on 3`)
  }

  const two = pulls(m)
  const m2 = mesh(['aa', 'bb', 'cc', 'dd', 'ee'])
  for (const model of ['m1', 'm2', 'm3']) m2.procs.get('aa')?.held.set(model, false)
  const wide = loopOf(
    m2,
    two,
    ['m1', 'm2', 'm3'].map((model) => ({ model, replicas: 3 })),
    2,
  )
  t.teardown(() => wide.stop())
  wide.start()
  t.ok(await until(() => two.calls.length === 2, 2_000, 5), 'two copies start (maxCopies 2)')
  await new Promise((r) => setTimeout(r, 100))
  t.is(two.calls.length, 2, 'no third while they run')
  t.not(two.calls[0]?.model, two.calls[1]?.model, 'of two different models')
})

test('loop: a failed copy backs off and goes to another processor; loads keep it loaded', async (t) => {
  const m = mesh(['aa', 'bb', 'cc'])
  m.procs.get('aa')?.held.set('m1', false)
  const pull = pulls(m)
  const desired: DesiredModel[] = [{ model: 'm1', replicas: 2, loaded: 2 }]
  const loop = loopOf(m, pull, desired, 2)
  t.teardown(() => loop.stop())
  loop.start()
  t.ok(await until(() => pull.calls.length === 1, 2_000, 5))
  const first = pull.calls[0]?.to
  pull.calls[0]?.settle(false)
  t.ok(await until(() => pull.calls.length === 2, 2_000, 5), 'another copy starts')
  t.not(pull.calls[1]?.to, first, 'onto the other processor: the failed one backs off')
  t.alike(
    loop.failing.map((f) => [f.kind, f.processor, f.failures, f.error.code]),
    [['copy', first, 1, 'ERR_BAD_REQUEST']],
    'the failure is kept with its error',
  )
  pull.calls[1]?.settle(true)
  t.ok(await until(() => m.loads.length === 2, 2_000, 5), 'loaded on both holders')
  t.alike(
    m.loads.sort(),
    [`modelLoad m1 aa -1`, `modelLoad m1 ${pull.calls[1]?.to} -1`].sort(),
    'no keep-alive expiry',
  )
})

test('loop: a processor joining starts a round at once', async (t) => {
  const m = mesh(['aa'])
  m.procs.get('aa')?.held.set('m1', false)
  const pull = pulls(m)
  const loop = new ReconcileLoop({
    reconcileMs: 60_000,
    maxCopies: 2,
    router: () => m.router,
    net: () => m.net,
    log: () => log,
    gather: m.gather,
    pull,
    desired: () => [{ model: 'm1', replicas: 2 }],
  })
  t.teardown(() => loop.stop())
  loop.start()
  await new Promise((r) => setTimeout(r, 100))
  t.is(pull.calls.length, 0, 'nowhere to copy it')
  m.procs.set('bb', { key: 'bb', held: new Map() })
  m.events.emit('added', {})
  t.ok(
    await until(() => pull.calls.length === 1, 2_000, 5),
    'copied onto the newcomer without waiting a minute',
  )
  t.is(pull.calls[0]?.to, 'bb')
  pull.calls[0]?.settle(true)
})

test('loop: a round whose facts were gathered while a copy ended plans again instead of copying twice', async (t) => {
  const m = mesh(['aa', 'bb', 'cc'])
  m.procs.get('aa')?.held.set('m1', false)
  let gate: Promise<void> | null = null
  let open = () => {}
  // Facts taken when asked, answered when the gate opens: they may predate an action's end.
  const slow = {
    ...m,
    gather: async () => {
      const facts = await m.gather()
      if (gate) await gate
      return facts
    },
  }
  const pull = pulls(m)
  const loop = loopOf(slow, pull, [{ model: 'm1', replicas: 2 }], 2)
  t.teardown(() => loop.stop())
  loop.start()
  t.ok(await until(() => pull.calls.length === 1, 2_000, 5), 'a copy starts')
  gate = new Promise<void>((resolve) => {
    open = resolve
  })
  await new Promise((r) => setTimeout(r, 100)) // a round is now waiting on facts without the copy
  pull.calls[0]?.settle(true)
  await new Promise((r) => setTimeout(r, 20))
  gate = null
  open()
  await new Promise((r) => setTimeout(r, 300))
  t.is(pull.calls.length, 1, 'replicas 2 met by the one copy: no second')
  t.is([...m.procs.values()].filter((p) => p.held.has('m1')).length, 2)
})
