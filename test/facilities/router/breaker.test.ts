import test from 'brittle'
import { MeshError } from '../../../kernel/errors.js'
import { until } from '../../helpers/mesh.js'
import { routerOver, standIn } from './stand-in-pool.js'

const down = () => new MeshError('ERR_UNAVAILABLE', 'down')

test('breaker: opens after processor faults in a row, half-opens for one probe, closes on success', async (t) => {
  const router = await routerOver([standIn(1)], { breakerFailures: 2, breakerCooldownMs: 200 })
  t.teardown(() => router.close())
  ;(await router.lease('m')).failed(down())
  t.is(router.list()[0]?.breaker, 'closed', 'one fault: still closed')
  ;(await router.lease('m')).failed(down())
  t.is(router.list()[0]?.breaker, 'open', 'two in a row: open')
  await t.exception(router.lease('m'), /ERR_NO_PROCESSOR/, 'refused while open')
  await new Promise((r) => setTimeout(r, 250))
  const probe = await router.lease('m')
  t.is(router.list()[0]?.breaker, 'half-open', 'after the cooldown: one probe')
  probe.answered()
  t.is(router.list()[0]?.breaker, 'closed', 'the probe succeeded: closed')
})

test('breaker: a failed probe opens it again', async (t) => {
  const router = await routerOver([standIn(1)], { breakerFailures: 1, breakerCooldownMs: 100 })
  t.teardown(() => router.close())
  ;(await router.lease('m')).failed(down())
  t.is(router.list()[0]?.breaker, 'open')
  await new Promise((r) => setTimeout(r, 150))
  ;(await router.lease('m')).failed(down())
  t.is(router.list()[0]?.breaker, 'open', 'open again')
})

test("breaker: errors that are not the processor's do not count", async (t) => {
  const router = await routerOver([standIn(1)], { breakerFailures: 1 })
  t.teardown(() => router.close())
  ;(await router.lease('m')).failed(MeshError.badRequest('bad'))
  ;(await router.lease('m')).failed(MeshError.cancelled())
  ;(await router.lease('m')).failed(new MeshError('ERR_UNAVAILABLE', 'moved', { rerouted: true }))
  ;(await router.lease('m')).stopped(false)
  t.is(router.list()[0]?.breaker, 'closed')
  t.is(router.list()[0]?.failures, 0)
  ;(await router.lease('m')).stopped(true)
  t.is(router.list()[0]?.breaker, 'open', 'a processor that hung until the deadline counts')
})

test("breaker: with every processor's breaker open a waiting request is told at once", async (t) => {
  const router = await routerOver([standIn(1), standIn(2)], { breakerFailures: 1, breakerCooldownMs: 150 })
  t.teardown(() => router.close())
  const a = await router.lease('m')
  const b = await router.lease('m')
  a.failed(down())
  const waiting = router.lease('m')
  b.failed(down())
  await t.exception(waiting, /ERR_NO_PROCESSOR/, 'every breaker open: told at once')
  t.ok(await until(() => router.list().every((p) => p.breaker === 'open'), 1000))
})
