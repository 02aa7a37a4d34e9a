import test from 'brittle'
import { Registry } from 'prom-client'
import { LogFacility } from '../../../facilities/log.facility.js'
import type { NetFacility } from '../../../facilities/net/net.facility.js'
import type { ProcessorEntry } from '../../../facilities/router/processor-entry.js'
import type { ModelWaiting, RouterFacility } from '../../../facilities/router/router.facility.js'
import { placementConfigSchema } from '../../../kernel/config.js'
import { MeshError } from '../../../kernel/errors.js'
import { GatewayModelPull } from '../../../workers/gateway/model-pull.js'
import { Placement } from '../../../workers/gateway/placement.js'
import { until } from '../../helpers/mesh.js'
import { llamaEntry } from '../../helpers/processor-entries.js'

const logger = new LogFacility({ level: 'silent' }).logger

const entry = llamaEntry

/** A gateway of `entries` whose queue is `waiting`; `calls` records what was asked of processors. */
function fakeGateway(entries: ProcessorEntry[], waiting: Map<string, ModelWaiting>, fail: Set<string>) {
  const calls: string[] = []
  const router = {
    waitingByModel: () => waiting,
    entriesFor: (m: string) => entries.filter((e) => e.models.has(m)),
    live: () => entries,
    find: (id: string) => entries.find((e) => e.id === id),
    beatNow: async () => {},
  } as unknown as RouterFacility
  const net = {
    peer: (key: Buffer) => {
      const id = key.toString('hex').slice(0, 2)
      type Payload = { model?: string; keepAliveMs?: number; manifest?: { model: string } }
      const call = async (method: string, payload: Payload) => {
        // A copy asks the holder to publish and share, then the receiver to fetch: the fetch is recorded.
        if (method === 'modelPublish') return { key: 'k'.repeat(64), model: payload.model }
        if (method === 'modelShare') return {}
        const model = payload.model ?? payload.manifest?.model
        calls.push(`${method} ${model} on ${id}${payload.keepAliveMs ? ` for ${payload.keepAliveMs}` : ''}`)
        if (fail.has(method)) throw new MeshError('ERR_UNSUPPORTED', `${method} refused`)
        if (method === 'modelFetch') {
          // The copy shows in the processor's next status.
          entries.find((e) => e.publicKey.equals(key))?.models.add(model as string)
          return { model, wireBytes: 1 }
        }
        return {}
      }
      return { request: call, stream: call }
    },
  } as unknown as NetFacility
  const gateway = { router, net, log: logger }
  return { gateway: { ...gateway, modelPull: new GatewayModelPull(gateway, new Map()) }, calls }
}

const config = placementConfigSchema.parse({
  enabled: true,
  queueWaitMs: 100,
  windowMs: 1_000,
  cooldownMs: 5_000,
  keepAliveMs: 1_500,
})

test('placement: sustained queueing loads the model on the idle cold holder, with its keep-alive, counted', async (t) => {
  let now = 0
  const warm = entry(1, ['m'], ['m'])
  const cold = entry(2, ['m'], [])
  const waiting = new Map([['m', { count: 3, oldestSince: 0 }]])
  const { gateway, calls } = fakeGateway([warm, cold], waiting, new Set())
  const register = new Registry()
  const placement = new Placement({ config, gateway, register, now: () => now })
  for (now = 100; now < 1_100; now += 100) placement.tick()
  t.alike(calls, [], 'not before the window')
  now = 1_100
  placement.tick()
  t.ok(await until(() => cold.loaded?.has('m') === true, 2_000), 'loaded there, as routing sees it')
  t.alike(calls, ['modelLoad m on 02 for 1500'])
  now = 2_000
  placement.tick()
  t.is(calls.length, 1, 'cooldown: nothing more')
  t.ok((await register.metrics()).includes('llm_mesh_gateway_placements_total{action="load",outcome="ok"} 1'))
})

test('placement: with no idle holder it copies the model onto an idle llama.cpp processor, then loads it; a failure backs off', async (t) => {
  let now = 0
  const busy = entry(1, ['m', 'n'], ['m'])
  busy.active = 1
  const empty = entry(2, ['other'], [])
  const waiting = new Map([['m', { count: 2, oldestSince: 0 }]])
  const fail = new Set<string>()
  const { gateway, calls } = fakeGateway([busy, empty], waiting, fail)
  const placement = new Placement({ config, gateway, now: () => now })
  for (now = 100; now <= 1_100; now += 100) placement.tick()
  t.ok(await until(() => calls.length === 2, 2_000), 'copied, then loaded')
  t.alike(calls, ['modelFetch m on 02', 'modelLoad m on 02 for 1500'])

  fail.add('modelFetch')
  const other = new Map([['n', { count: 2, oldestSince: 10_000 }]])
  waiting.clear()
  for (const [k, v] of other) waiting.set(k, v)
  for (now = 10_100; now <= 11_100; now += 100) placement.tick()
  t.ok(await until(() => calls.length === 3, 2_000))
  t.is(calls[2], 'modelFetch n on 02', 'a copy of another model, refused')
  await new Promise((r) => setTimeout(r, 50))
  now = 11_100 + 5_000
  placement.tick()
  t.is(calls.length, 3, 'backed off: twice the cooldown after a failure')
  now = 11_100 + 10_000
  placement.tick()
  t.ok(await until(() => calls.length === 4, 2_000), 'tried again after it')
})
