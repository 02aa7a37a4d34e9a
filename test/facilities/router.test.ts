import test from 'brittle'
import { LogFacility } from '../../facilities/log.facility.js'
import type { NetFacility } from '../../facilities/net.facility.js'
import { RouterFacility } from '../../facilities/router.facility.js'
import { gatewayConfigSchema, parseConfig } from '../../workers/lib/config.js'
import { FAST_REGISTRY, until } from '../helpers/mesh.js'

const logger = new LogFacility({ level: 'silent' }).logger
const KEY = Buffer.alloc(32, 7)

/** A router over a stand-in for the network: one processor whose `status` reply is `status`. */
async function routerWith(status: Record<string, unknown>) {
  const net = {
    lookup: async () => [KEY],
    peer: () => ({ request: async () => status }),
    forget: () => {},
  } as unknown as NetFacility
  const config = parseConfig(gatewayConfigSchema, {
    bootstrap: ['127.0.0.1:1'],
    registry: FAST_REGISTRY,
  })
  const router = new RouterFacility({ net, config: config.registry, routing: config.routing, logger })
  await router.ready()
  return router
}

test("router: a processor's count of other callers' generations is its load from elsewhere", async (t) => {
  // One slot, one generation running, and the processor says it is this gateway's own (say,
  // one that ended here while the report travelled): no load from elsewhere, so least-loaded
  // and fastest do not see a busy processor where there is none.
  const status: Record<string, unknown> = {
    role: 'processor',
    models: ['m'],
    capacity: 1,
    active: 1,
    activeOthers: 0,
  }
  const router = await routerWith(status)
  t.teardown(() => router.close())
  t.ok(await until(() => router.size === 1), 'the processor joined')
  const [entry] = router.entriesFor('m')
  t.is(entry?.activeElsewhere, 0, 'none elsewhere, as reported')

  // Another caller's generation counts, but never more than the processor runs.
  status.activeOthers = 5
  t.ok(await until(() => router.entriesFor('m')[0]?.activeElsewhere === 1), 'capped at active')

  // A processor from before the field: its count less this gateway's own requests there.
  status.capacity = 4
  status.active = 3
  delete status.activeOthers
  const lease = await router.acquire('m')
  t.ok(await until(() => router.entriesFor('m')[0]?.activeElsewhere === 2), 'active − in flight here: 3 − 1')
  lease.release({ ok: true })
})
