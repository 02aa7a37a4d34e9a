import test from 'brittle'
import { AuditLog } from '../../../facilities/audit/audit-log.js'
import { MAX_GROUPS } from '../../../facilities/audit/failure-digest.js'
import { StoreFacility } from '../../../facilities/store.facility.js'
import { auditQuerySchema } from '../../../kernel/audit.js'
import { rejectsWith } from '../../helpers/assert.js'
import { until } from '../../helpers/mesh.js'
import { logger, sleep } from '../auth/fixture.js'

type T = { tmp(): Promise<string>; teardown(fn: () => unknown): void }

async function openLog(t: T, dir?: string, failureWindowMs = 60_000) {
  const where = dir ?? (await t.tmp())
  const store = new StoreFacility({ dir: where })
  await store.ready()
  const log = new AuditLog({ store, logger, failureWindowMs })
  await log.ready()
  let closed = false
  const close = async () => {
    if (closed) return
    closed = true
    await log.close()
    await store.close()
  }
  t.teardown(close)
  return { dir: where, log, close }
}

const all = (log: AuditLog, q: Record<string, unknown> = {}) =>
  log.read(auditQuerySchema.parse({ limit: 1000, ...q }))

test('audit log: concurrent appends are all kept, in order, under distinct keys; keys go on after a restart', async (t) => {
  const { dir, log, close } = await openLog(t)
  const n = 500
  const made = await Promise.all(
    Array.from({ length: n }, (_, i) =>
      log.record({ action: 'user.create', actor: 'system', target: `u${i}`, details: { n: i } }),
    ),
  )
  const { entries, more } = await all(log)
  t.is(entries.length, n, 'every concurrent append is there')
  t.is(more, false)
  t.alike(
    entries.map((e) => e.details?.n),
    Array.from({ length: n }, (_, i) => i),
    'in the order they were handed in',
  )
  t.alike(
    entries.map((e) => e.id),
    made.map((e) => e.id),
    'under the ids record() returned',
  )
  t.is(new Set(entries.map((e) => e.id)).size, n, 'ids are distinct')
  t.is(entries[0]?.outcome, 'ok', 'outcome defaults to ok')
  const lastId = entries[n - 1]?.id as string
  await close()

  const again = await openLog(t, dir)
  const next = await again.log.record({ action: 'key.revoke', actor: 'cli', target: 'k1' })
  t.ok(next.id > lastId, `the first id after a restart (${next.id}) follows the last (${lastId})`)
  t.is((await all(again.log)).entries.length, n + 1, 'nothing overwritten')
})

test('audit log: a clock that steps back never makes an entry sort before the last', async (t) => {
  const { log } = await openLog(t)
  const first = await log.record({ action: 'user.create', actor: 'system' })
  const realNow = Date.now
  Date.now = () => realNow() - 60_000
  let second: Awaited<ReturnType<AuditLog['record']>>
  try {
    second = await log.record({ action: 'user.update', actor: 'system' })
  } finally {
    Date.now = realNow
  }
  t.ok(second.id > first.id, 'a later id')
  t.is(second.at, first.at, 'the time held at the last one')
  t.alike(
    (await all(log)).entries.map((e) => e.action),
    ['user.create', 'user.update'],
  )
})

test('audit log: reads by since, until and action prefix; bad entries refused with coded errors', async (t) => {
  const { log, close } = await openLog(t)
  const a = await log.record({ action: 'user.create', actor: 'system', target: 'u1' })
  await sleep(5)
  const b = await log.record({ action: 'user.password.reset', actor: 'u1', target: 'u1' })
  await sleep(5)
  const c = await log.record({ action: 'key.create', actor: 'u1', target: 'k1' })
  t.alike(
    (await all(log, { since: b.at })).entries.map((e) => e.id),
    [b.id, c.id],
  )
  t.alike(
    (await all(log, { until: b.at })).entries.map((e) => e.id),
    [a.id],
    'until is exclusive',
  )
  t.alike(
    (await all(log, { action: 'user' })).entries.map((e) => e.id),
    [a.id, b.id],
  )
  t.alike(
    (await all(log, { action: 'user.password' })).entries.map((e) => e.id),
    [b.id],
  )
  t.alike((await all(log, { action: 'use' })).entries, [], 'a prefix ends at a dot')

  const key = `lmk_${'0'.repeat(16)}_${'A'.repeat(32)}`
  await rejectsWith(
    t,
    log.record({ action: 'key.create', actor: 'u1', details: { shown: key } }),
    'ERR_BAD_REQUEST',
    'an API key in details',
  )
  await rejectsWith(
    t,
    log.record({ action: 'invite.create', actor: 'u1', target: `lmi1.${'x'.repeat(40)}` }),
    'ERR_BAD_REQUEST',
    'an invite token as target',
  )
  await rejectsWith(
    t,
    log.record({ action: 'user.update', actor: 'u1', details: { blob: 'x'.repeat(2000) } }),
    'ERR_BAD_REQUEST',
    'details over 1 KiB',
  )
  t.execution(
    () => log.failure({ action: 'key.revoke', actor: 'u1', target: key, outcome: 'ERR_NOT_FOUND' }),
    'a failure that cannot be written does not throw',
  )
  await sleep(50)
  t.is((await all(log)).entries.length, 3, 'nothing of the refused entries written')
  await close()
  await rejectsWith(t, log.record({ action: 'user.update', actor: 'u1' }), 'ERR_UNAVAILABLE', 'closed')
})

test('audit log: a flood of failures costs two entries a group a window, and none goes uncounted', async (t) => {
  const { log } = await openLog(t, undefined, 1_000)
  const failure = (target: string, peer: string) =>
    log.failure({
      action: 'auth.login.failed',
      actor: 'anonymous',
      target,
      outcome: 'ERR_AUTH_INVALID',
      peer,
    })
  for (let i = 0; i < 1000; i++) failure('bob', `p${i % 3}`)
  await until(async () => (await all(log)).entries.length > 0, 5_000, 10)
  let { entries } = await all(log)
  t.is(entries.length, 1, 'the first failure is written at once')
  t.alike(entries[0]?.details, { peer: 'p0' })
  await until(async () => (await all(log)).entries.length > 1, 5_000, 20)
  entries = (await all(log)).entries
  t.is(entries.length, 2, 'and the rest as one summary when the window ends')
  t.is(entries[1]?.details?.repeated, 999)
  t.is(entries[1]?.details?.peers, 3, 'distinct peers among the repeats')
  t.is(entries[1]?.details?.since, entries[0]?.at)
  t.is(entries[1]?.target, 'bob')

  // Many targets: past MAX_GROUPS open groups, the rest share one.
  const extra = 44
  for (let i = 0; i < MAX_GROUPS + extra; i++) failure(`user${i}`, 'px')
  // Written in one batch, not awaited by failure(): wait for it (a window is 1 s: no summary yet).
  await until(async () => (await all(log)).entries.length > 2, 5_000, 10)
  const during = (await all(log)).entries.slice(2)
  t.is(during.length, MAX_GROUPS + 1, 'one entry per group, and one for the overflow')
  const overflow = during[MAX_GROUPS]
  t.is(overflow?.actor, '*')
  t.is(overflow?.target, null)
  t.alike(overflow?.details, { overflow: true, peer: 'px' })
  await until(async () => (await all(log)).entries.length > 2 + MAX_GROUPS + 1, 5_000, 20)
  const after = (await all(log)).entries.slice(2 + MAX_GROUPS + 1)
  t.is(after.length, 1, 'one summary: the overflow group')
  t.is(after[0]?.details?.repeated, extra - 1, 'every failure past the first of the overflow counted')
})

test('audit log: failures still pending are written when the log closes', async (t) => {
  const { dir, log, close } = await openLog(t, undefined, 60_000)
  for (let i = 0; i < 5; i++)
    log.failure({ action: 'user.create', actor: 'u1', target: null, outcome: 'ERR_FORBIDDEN' })
  await close()
  const again = await openLog(t, dir)
  const { entries } = await all(again.log)
  t.alike(
    entries.map((e) => [e.action, e.outcome, e.details?.repeated]),
    [
      ['user.create', 'ERR_FORBIDDEN', undefined],
      ['user.create', 'ERR_FORBIDDEN', 4],
    ],
  )
})
