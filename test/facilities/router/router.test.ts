import test from 'brittle'
import { LogFacility } from '../../../facilities/log.facility.js'
import type { NetFacility } from '../../../facilities/net/net.facility.js'
import { type Lease, RouterFacility } from '../../../facilities/router/router.facility.js'
import { CancelToken } from '../../../kernel/cancel.js'
import { gatewayConfigSchema, parseConfig } from '../../../kernel/config.js'
import { FAST_REGISTRY, until } from '../../helpers/mesh.js'

const logger = new LogFacility({ level: 'silent' }).logger

/** A lease taken at once, or null: a request that would wait is cancelled (it takes no slot). */
async function leaseNow(router: RouterFacility, model: string, userId = ''): Promise<Lease | null> {
  const cancel = new CancelToken()
  const leasing = router.lease(model, { userId, cancel }).catch(() => null)
  const now = await Promise.race([leasing, new Promise<'later'>((r) => setImmediate(() => r('later')))])
  if (now !== 'later') return now
  cancel.abort()
  ;(await leasing)?.answered()
  return null
}
const KEY = Buffer.alloc(32, 7)

/** A router over a stand-in for the network: one processor whose `status` reply is `status`. */
async function routerWith(status: Record<string, unknown>) {
  const conn = { request: async () => status, opened: async () => {}, onClose: () => {}, destroy: () => {} }
  const net = {
    lookup: async () => [KEY],
    peer: () => conn,
    dial: () => conn,
    adopt: () => {},
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

  // A report without the field (no caller asked): none elsewhere.
  delete status.activeOthers
  t.ok(await until(() => router.entriesFor('m')[0]?.activeElsewhere === 0), 'absent: none elsewhere')
})

/**
 * A stand-in network whose one processor can be made to answer, hang, or close its
 * connection, and can restart (a new `instance`).
 */
function controllableNet() {
  const state = {
    status: { role: 'processor', models: ['m'], capacity: 1, active: 0, instance: 'one' } as Record<
      string,
      unknown
    >,
    mode: 'answer' as 'answer' | 'hang' | 'refuse',
    dials: 0,
  }
  type Conn = {
    closed: boolean
    closers: Array<() => void>
    request: () => Promise<unknown>
    opened: () => Promise<void>
    onClose: (fn: () => void) => void
    destroy: () => void
  }
  const make = (): Conn => {
    const conn: Conn = {
      closed: false,
      closers: [],
      request: () => {
        if (state.mode === 'hang')
          return new Promise((_, reject) => setTimeout(() => reject(new Error('timeout')), 100))
        if (state.mode === 'refuse') return Promise.reject(new Error('refused'))
        return Promise.resolve({ ...state.status })
      },
      opened: async () => {},
      onClose: (fn) => {
        conn.closers.push(fn)
      },
      destroy: () => {
        conn.closed = true
      },
    }
    return conn
  }
  let current = make()
  const close = () => {
    const old = current
    old.closed = true
    current = make()
    for (const fn of old.closers) fn()
  }
  const net = {
    lookup: async () => [KEY],
    peer: () => current,
    dial: () => {
      state.dials++
      return make()
    },
    adopt: (conn: Conn) => {
      current = conn
    },
    forget: () => {},
  } as unknown as NetFacility
  return { net, state, close }
}

async function lifecycleRouter(net: NetFacility, registry: Record<string, number> = {}) {
  const config = parseConfig(gatewayConfigSchema, {
    bootstrap: ['127.0.0.1:1'],
    registry: {
      ...FAST_REGISTRY,
      heartbeatIntervalMs: 50,
      heartbeatTimeoutMs: 100,
      redialMaxMs: 200,
      ...registry,
    },
  })
  const router = new RouterFacility({ net, config: config.registry, routing: config.routing, logger })
  await router.ready()
  return router
}

test('router: a processor whose connection closes is re-dialled, and one that restarted serves again', async (t) => {
  const { net, state, close } = controllableNet()
  const router = await lifecycleRouter(net)
  t.teardown(() => router.close())
  const events: string[] = []
  router.events.on('unreachable', () => events.push('unreachable'))
  router.events.on('restarted', () => events.push('restarted'))
  router.events.on('drop', () => events.push('drop'))
  t.ok(await until(() => router.list()[0]?.state === 'serving', 2_000), 'joined, serving')

  // It stops (connection closed) and is down for a moment: nothing is leased there meanwhile.
  state.mode = 'refuse'
  close()
  t.is(router.list()[0]?.state, 'unreachable', 'unreachable as soon as the connection closes')
  t.is(await leaseNow(router, 'm'), null, 'sent nothing new while unreachable')
  await new Promise((r) => setTimeout(r, 300))
  t.ok(state.dials >= 2, `re-dialled with backoff (${state.dials} dials)`)

  // Back with a new process: serving again, and its old work is failed over.
  state.status.instance = 'two'
  state.mode = 'answer'
  t.ok(await until(() => router.list()[0]?.state === 'serving', 2_000), 'serving again after the restart')
  t.alike(events, ['unreachable', 'restarted'], 'told listeners: unreachable, then restarted (never dropped)')
  const lease = await leaseNow(router, 'm')
  t.ok(lease, 'leased again')
  lease?.answered()
})

test('router: a draining processor gets nothing new; waiting requests go once it serves again', async (t) => {
  const { net, state } = controllableNet()
  const router = await lifecycleRouter(net)
  t.teardown(() => router.close())
  t.ok(await until(() => router.size === 1, 2_000))
  state.status.draining = true
  t.ok(await until(() => router.list()[0]?.state === 'draining', 2_000), 'draining, as reported')
  t.is(await leaseNow(router, 'm'), null, 'no lease while it drains')
  let leased = false
  const waiting = router.lease('m').then((l) => {
    leased = true
    return l
  })
  await new Promise((r) => setTimeout(r, 200))
  t.absent(leased, 'a request waits rather than failing')
  // It restarted (new instance) without ever being unreachable: the request goes there.
  state.status.draining = false
  state.status.instance = 'after'
  const lease = await waiting
  t.is(lease.entry.state, 'serving')
  lease.answered()
})

test('router: a processor that stops answering is unreachable, kept while busy, and dropped once gone', async (t) => {
  const { net, state } = controllableNet()
  const router = await lifecycleRouter(net, { goneAfterMs: 1_500 })
  t.teardown(() => router.close())
  const events: string[] = []
  router.events.on('restarted', () => events.push('restarted'))
  router.events.on('drop', () => events.push('drop'))
  t.ok(await until(() => router.size === 1, 2_000))
  // Busy for a while (a long prompt on its event loop): unreachable, then the same process answers.
  state.mode = 'hang'
  t.ok(await until(() => router.list()[0]?.state === 'unreachable', 2_000), 'unreachable after missed beats')
  state.mode = 'answer'
  t.ok(await until(() => router.list()[0]?.state === 'serving', 2_000), 'serving again: same process')
  t.alike(events, [], 'neither restarted nor dropped')
  // Gone for good: dropped after goneAfterMs, and a waiting request fails instead of hanging.
  state.mode = 'hang'
  t.ok(await until(() => router.list()[0]?.state === 'unreachable', 2_000))
  const waiting = router.lease('m').then(
    () => 'leased',
    (err: { code?: string }) => err.code,
  )
  t.ok(await until(() => router.size === 0, 4_000), 'dropped')
  t.alike(events, ['drop'])
  t.is(await waiting, 'ERR_NO_PROCESSOR', 'the waiting request is told')
})

test("router: a user holding their share of a model's slots gets the next one after other waiting users", async (t) => {
  const router = await routerWith({ role: 'processor', models: ['m'], capacity: 2, active: 0 })
  t.teardown(() => router.close())
  t.ok(await until(() => router.size === 1), 'the processor joined')

  // Alone, a user may hold every slot: nobody else waits for them.
  const a1 = await leaseNow(router, 'm', 'alice')
  const a2 = await router.lease('m', { userId: 'alice' })
  t.ok(a1 && a2, 'a solo user takes both slots at once')

  // Alice's third request waits, then Bob's: two users, two slots, a share of one each.
  const order: string[] = []
  const waitFor = (userId: string) =>
    router.lease('m', { userId }).then((lease) => {
      order.push(userId)
      return lease
    })
  const a3 = waitFor('alice')
  const b1 = waitFor('bob')
  t.is(router.queued, 2, 'both wait')
  t.is(await leaseNow(router, 'm', 'carol'), null, 'no slot is free for anyone')

  // A slot frees: Alice still holds one (her share) and Bob none, so it is Bob's, though
  // Alice queued first.
  a1?.answered()
  await new Promise((r) => setImmediate(r))
  t.alike(order, ['bob'], 'the freed slot went to the waiting user below his share')
  t.is(router.queued, 1, "Alice's third request still waits")
  a2.answered()
  const [alice, bob] = await Promise.all([a3, b1])
  t.alike(order, ['bob', 'alice'], 'then the next one to Alice')
  bob.answered()
  alice.answered()

  // Bob gone, Alice alone again: both slots hers, none held back.
  const again = [await leaseNow(router, 'm', 'alice'), await leaseNow(router, 'm', 'alice')]
  t.ok(
    again.every((l) => l !== null),
    'a user alone takes every slot again',
  )
  for (const l of again) l?.answered()
})
