import test from 'brittle'
import { CancelToken } from '../../../kernel/cancel.js'
import { MeshError } from '../../../kernel/errors.js'
import { routerOver, standIn } from './stand-in-pool.js'

test('scheduler: round-robin takes turns over the processors', async (t) => {
  const router = await routerOver([standIn(1), standIn(2)], { strategy: 'round-robin' })
  t.teardown(() => router.close())
  const seen: string[] = []
  for (let i = 0; i < 4; i++) {
    const lease = await router.lease('m')
    seen.push(lease.entry.id.slice(0, 2))
    lease.answered()
  }
  t.alike(seen, ['01', '02', '01', '02'])
})

test('scheduler: least-loaded picks the processor with a free slot', async (t) => {
  const router = await routerOver([standIn(1), standIn(2)])
  t.teardown(() => router.close())
  const a = await router.lease('m')
  const b = await router.lease('m')
  t.not(a.entry.id, b.entry.id, 'the second request goes to the idle processor')
  a.answered()
  b.answered()
})

test('scheduler: exclude skips the processors a request failed on', async (t) => {
  const router = await routerOver([standIn(1), standIn(2)], { strategy: 'round-robin' })
  t.teardown(() => router.close())
  const first = await router.lease('m')
  first.answered()
  const exclude = new Set([first.entry.id])
  for (let i = 0; i < 3; i++) {
    const lease = await router.lease('m', { exclude })
    t.not(lease.entry.id, first.entry.id)
    lease.answered()
  }
  const all = new Set([first.entry.id, ...router.entriesFor('m').map((e) => e.id)])
  await t.exception(router.lease('m', { exclude: all }), /ERR_NO_PROCESSOR/, 'none left')
})

test('scheduler: avoid prefers processors no sibling uses, and takes one of them when only they are free', async (t) => {
  const router = await routerOver([standIn(1, ['m'], 2), standIn(2, ['m'], 2)], { strategy: 'round-robin' })
  t.teardown(() => router.close())
  const avoid = new Set<string>()
  const a = await router.lease('m', { avoid })
  const b = await router.lease('m', { avoid })
  t.not(a.entry.id, b.entry.id, 'the second goes where the first is not')
  t.alike([...avoid].sort(), [a.entry.id, b.entry.id].sort(), 'both picks are remembered')
  const c = await router.lease('m', { avoid })
  t.ok([a.entry.id, b.entry.id].includes(c.entry.id), 'every free one avoided: one of them, not a wait')
  const d = await router.lease('m', { avoid })
  const waiting = router.lease('m', { avoid })
  t.is(router.queued, 1, 'every slot taken: the fifth waits as any request does')
  b.answered()
  const e = await waiting
  t.is(e.entry.id, b.entry.id, 'and gets the slot that frees')
  for (const l of [a, c, d, e]) l.answered()
})

test('scheduler: waiting requests of one user go in order, users in turn', async (t) => {
  const router = await routerOver([standIn(1)])
  t.teardown(() => router.close())
  const held = await router.lease('m', { userId: 'alice' })
  const order: string[] = []
  const wait = (userId: string, tag: string) =>
    router.lease('m', { userId }).then((l) => {
      order.push(tag)
      l.answered()
    })
  const all = [wait('alice', 'a1'), wait('alice', 'a2'), wait('bob', 'b1'), wait('bob', 'b2')]
  t.is(router.queued, 4)
  held.answered()
  await Promise.all(all)
  t.alike(
    order,
    ['a1', 'b1', 'a2', 'b2'],
    'users take turns, though alice queued twice first; each user in order',
  )
})

test('scheduler: a request cancelled while queued takes no slot', async (t) => {
  const router = await routerOver([standIn(1)])
  t.teardown(() => router.close())
  const held = await router.lease('m')
  const cancel = new CancelToken()
  const cancelled = router.lease('m', { cancel })
  const next = router.lease('m')
  cancel.abort()
  await t.exception(cancelled, /ERR_CANCELLED/)
  t.is(router.queued, 1, 'out of the queue')
  held.answered()
  const lease = await next
  t.is(router.list()[0]?.inflight, 1, 'the slot went to the next request')
  lease.answered()
  const already = new CancelToken()
  already.abort(MeshError.timeout('gone'))
  await t.exception(router.lease('m', { cancel: already }), /ERR_TIMEOUT/, 'cancelled before: no slot')
  t.is(router.list()[0]?.inflight, 0)
})

test('scheduler: an unknown model is refused by requireModel and lease', async (t) => {
  const router = await routerOver([standIn(1)])
  t.teardown(() => router.close())
  await router.requireModel('m')
  await router.requireModel('m:latest')
  await t.exception(router.requireModel('nope'), /ERR_MODEL_NOT_FOUND/)
  await t.exception(router.lease('nope'), /ERR_MODEL_NOT_FOUND/)
})

test('scheduler: a full queue answers ERR_BUSY with a retry hint', async (t) => {
  const router = await routerOver([standIn(1)], { maxQueue: 1 })
  t.teardown(() => router.close())
  const held = await router.lease('m')
  const waiting = router.lease('m')
  const err = await router.lease('m').catch((e: MeshError) => e)
  t.is((err as MeshError).code, 'ERR_BUSY')
  t.ok(((err as MeshError).details?.retryAfterMs as number) >= 1000)
  held.answered()
  ;(await waiting).answered()
})

test('scheduler: failed() classifies the error', async (t) => {
  const router = await routerOver([standIn(1)])
  t.teardown(() => router.close())
  let v = (await router.lease('m')).failed(new MeshError('ERR_UNAVAILABLE', 'down'))
  t.alike([v.error.code, v.retry, v.rerouted], ['ERR_UNAVAILABLE', true, false], 'retryable')
  v = (await router.lease('m')).failed(MeshError.badRequest('no'))
  t.alike([v.error.code, v.retry], ['ERR_BAD_REQUEST', false], 'the request is at fault: not retried')
  v = (await router.lease('m')).failed(new MeshError('ERR_TIMEOUT', 'slow'), 3)
  t.alike([v.error.code, v.retry], ['ERR_STREAM_BROKEN', false], 'after chunks: a broken stream')
  v = (await router.lease('m')).failed(new MeshError('ERR_UNAVAILABLE', 'bye', { draining: true }))
  t.alike([v.retry, v.rerouted], [true, true], 'a draining processor: rerouted')
  t.is(router.list()[0]?.state, 'draining', 'and sent nothing new')
})
