import test from 'brittle'
import type { UsageCounter } from '../../../kernel/accounts.js'
import { rejectsWith } from '../../helpers/assert.js'
import { dump, expectedCounters, mixedRecords, openLedger, rec, sortedEntries } from './ledger-fixture.js'

test('usage: records() keeps only the records inside its range, though a key holds more', async (t) => {
  const { usage } = await openLedger(t)
  const now = Date.now()
  const early = rec({ userId: 'u1', ts: now - 500 })
  const late = rec({ userId: 'u1', ts: now })
  await usage.record(early)
  await usage.record(late)
  t.alike(
    (await usage.records('u1', now, now)).map((r) => r.id),
    [late.id],
    'from = to = the later ts',
  )
  t.alike(
    (await usage.records('u1', now - 500, now - 1)).map((r) => r.id),
    [early.id],
  )
  t.alike(
    (await usage.records('u1', 0, now + 1)).map((r) => r.id),
    [early.id, late.id],
  )
})

test('usage: counters equal the sums of the records', async (t) => {
  const { store, usage } = await openLedger(t, { maxBatch: 7 })
  const records = mixedRecords()
  // Half in one burst, half one by one: counters add up across commits.
  const half = records.length / 2
  await Promise.all(records.slice(0, half).map((r) => usage.record(r)))
  for (const r of records.slice(half)) await usage.record(r)
  const d = await dump(store, usage)
  t.alike(sortedEntries(d.counters), sortedEntries(expectedCounters(records)))
  t.is(d.counters.size, 2 * 4 * 2, 'one counter per user, day and model')
  t.alike(d.counters.get('counters/u1/2024-05-01/org/model:7b'), {
    requests: 3,
    errors: 1,
    promptTokens: 28 + 31 + 34,
    completionTokens: 1 + 2 + 3,
  })
  t.is(d.meta?.records, records.length)
})

test('usage: summary rows and totals over a date range, with a model filter', async (t) => {
  const { usage } = await openLedger(t)
  const records = mixedRecords()
  await Promise.all(records.map((r) => usage.record(r)))
  const expected = expectedCounters(records)
  const row = (user: string, day: string, model: string) => ({
    day,
    model,
    ...(expected.get(`counters/${user}/${day}/${model}`) as UsageCounter),
  })
  const totalOf = (rows: UsageCounter[]) =>
    rows.reduce(
      (a, r) => ({
        requests: a.requests + r.requests,
        errors: a.errors + r.errors,
        promptTokens: a.promptTokens + r.promptTokens,
        completionTokens: a.completionTokens + r.completionTokens,
      }),
      { requests: 0, errors: 0, promptTokens: 0, completionTokens: 0 },
    )

  const may = await usage.summary('u1', '2024-05-01', '2024-05-31')
  const mayRows = [
    row('u1', '2024-05-01', 'm1'),
    row('u1', '2024-05-01', 'org/model:7b'),
    row('u1', '2024-05-02', 'm1'),
    row('u1', '2024-05-02', 'org/model:7b'),
    row('u1', '2024-05-15', 'm1'),
    row('u1', '2024-05-15', 'org/model:7b'),
  ]
  t.alike(may.rows, mayRows, 'May: 3 days x 2 models, in day then model order; not u10, not April')
  t.alike(may.total, totalOf(mayRows))
  t.is(may.total.requests, 18)
  t.is(may.userId, 'u1')
  t.is(may.from, '2024-05-01')
  t.is(may.to, '2024-05-31')

  const edges = await usage.summary('u10', '2024-04-30', '2024-05-01')
  const edgeRows = [
    row('u10', '2024-04-30', 'm1'),
    row('u10', '2024-04-30', 'org/model:7b'),
    row('u10', '2024-05-01', 'm1'),
    row('u10', '2024-05-01', 'org/model:7b'),
  ]
  t.alike(edges.rows, edgeRows, 'both ends of the range are included (every model of `to`)')
  t.alike(edges.total, totalOf(edgeRows))

  const oneDay = await usage.summary('u1', '2024-05-15', '2024-05-15', 'org/model:7b')
  t.alike(oneDay.rows, [row('u1', '2024-05-15', 'org/model:7b')], 'one day, one model')
  t.alike(oneDay.total, totalOf([row('u1', '2024-05-15', 'org/model:7b')]))

  const m1 = await usage.summary('u1', '2024-01-01', '2024-12-31', 'm1')
  t.alike(
    m1.rows.map((r) => r.day),
    ['2024-04-30', '2024-05-01', '2024-05-02', '2024-05-15'],
  )
  t.ok(
    m1.rows.every((r) => r.model === 'm1'),
    'the filter keeps only m1',
  )

  const none = await usage.summary('u1', '2024-06-01', '2024-06-30')
  t.alike(none.rows, [])
  t.alike(none.total, { requests: 0, errors: 0, promptTokens: 0, completionTokens: 0 })
  t.alike((await usage.summary('nobody', '2024-01-01', '2024-12-31')).rows, [])
  t.alike((await usage.summary('u1', '2024-01-01', '2024-12-31', 'other')).rows, [])
})

test('usage: summary rejects bad dates with ERR_BAD_REQUEST', async (t) => {
  const { usage } = await openLedger(t)
  await rejectsWith(t, usage.summary('u1', '2024-5-01', '2024-05-31'), 'ERR_BAD_REQUEST', 'short month')
  await rejectsWith(t, usage.summary('u1', '20240501', '2024-05-31'), 'ERR_BAD_REQUEST', 'no dashes')
  await rejectsWith(t, usage.summary('u1', '2024-05-01', 'today'), 'ERR_BAD_REQUEST', 'a word')
  await rejectsWith(t, usage.summary('u1', '2024-05-01', ''), 'ERR_BAD_REQUEST', 'empty')
  await rejectsWith(
    t,
    usage.summary('u1', '2024-05-01T00:00', '2024-05-31'),
    'ERR_BAD_REQUEST',
    'a time after the date',
  )
  await rejectsWith(t, usage.summary('u1', '2024-05-31', '2024-05-01'), 'ERR_BAD_REQUEST', 'from after to')
})

test('usage: records() returns every record of a user once, oldest first', async (t) => {
  const { usage } = await openLedger(t, { maxBatch: 9 })
  const records = mixedRecords()
  await Promise.all(records.slice(0, 20).map((r) => usage.record(r)))
  for (const r of records.slice(20, 30)) await usage.record(r)
  await Promise.all(records.slice(30).map((r) => usage.record(r)))
  const to = Date.now() + 1000
  const u1 = await usage.records('u1', 0, to)
  const u10 = await usage.records('u10', 0, to)
  t.alike(
    u1,
    records.filter((r) => r.userId === 'u1'),
    'u1: every record with every field, in order',
  )
  t.alike(
    u10,
    records.filter((r) => r.userId === 'u10'),
    'u10: every record with every field, in order',
  )
  t.is(u1.length + u10.length, records.length)
  t.is(new Set([...u1, ...u10].map((r) => r.id)).size, records.length, 'no record twice')
  t.alike(
    (await usage.records('u1', 0, to, 7)).map((r) => r.id),
    u1.slice(0, 7).map((r) => r.id),
    'limit',
  )
  t.alike(await usage.records('u1', 0, Date.UTC(2000, 0, 1)), [], 'no commit before 2000')
  t.alike(await usage.records('u1', to, to + 60_000), [], 'no commit after now')
  t.alike(await usage.records('nobody', 0, to), [])
})
