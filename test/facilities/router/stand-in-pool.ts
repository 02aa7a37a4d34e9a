import { LogFacility } from '../../../facilities/log.facility.js'
import type { NetFacility } from '../../../facilities/net/net.facility.js'
import { RouterFacility } from '../../../facilities/router/router.facility.js'
import { gatewayConfigSchema, parseConfig } from '../../../kernel/config.js'
import { FAST_REGISTRY, until } from '../../helpers/mesh.js'

export const logger = new LogFacility({ level: 'silent' }).logger

/** A stand-in processor: its `status`, and how it answers other calls (by method). */
export interface StandIn {
  key: Buffer
  status: Record<string, unknown>
  answer: (method: string, payload: unknown, opts: Record<string, unknown>) => Promise<unknown>
}

/** A processor serving `models` with `capacity` slots, answering `infer` with `reply`. */
export function standIn(n: number, models: string[] = ['m'], capacity = 1): StandIn {
  return {
    key: Buffer.alloc(32, n),
    status: { role: 'processor', models, capacity, active: 0, instance: `p${n}` },
    answer: async () => ({ text: `from ${n}`, promptTokens: 1, completionTokens: 1, doneReason: 'stop' }),
  }
}

/** A stand-in network over `pool`: lookups find them all; `status` gives their status; the rest goes to `answer`. */
export function standInNet(pool: StandIn[]): NetFacility {
  const byId = new Map(pool.map((p) => [p.key.toString('hex'), p]))
  const conn = (key: Buffer) => {
    const p = byId.get(key.toString('hex')) as StandIn
    const call = (method: string, payload: unknown, opts: Record<string, unknown> = {}) =>
      method === 'status' ? Promise.resolve({ ...p.status }) : p.answer(method, payload, opts)
    return { request: call, stream: call, opened: async () => {}, onClose: () => {}, destroy: () => {} }
  }
  return {
    lookup: async () => pool.map((p) => p.key),
    peer: conn,
    dial: conn,
    adopt: () => {},
    forget: () => {},
  } as unknown as NetFacility
}

/** A router over `pool` with `routing` options, once every processor joined. */
export async function routerOver(pool: StandIn[], routing: Record<string, unknown> = {}) {
  const config = parseConfig(gatewayConfigSchema, {
    bootstrap: ['127.0.0.1:1'],
    registry: FAST_REGISTRY,
    routing,
  })
  const router = new RouterFacility({
    net: standInNet(pool),
    config: config.registry,
    routing: config.routing,
    logger,
  })
  await router.ready()
  await until(() => router.size === pool.length)
  return router
}
