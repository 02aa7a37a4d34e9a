import test from 'brittle'
import { USAGE_BEE } from '../../../facilities/usage/usage.facility.js'
import type { UsageRecord } from '../../../kernel/accounts.js'
import { rejectsWith } from '../../helpers/assert.js'
import {
  dump,
  expectedCounters,
  mixedRecords,
  NOW,
  openLedger,
  rec,
  sortedEntries,
} from './ledger-fixture.js'

test('usage: data survives close and reopen of the store', async (t) => {
  const first = await openLedger(t, { maxBatch: 16 })
  const records = mixedRecords()
  await Promise.all(records.map((r) => first.usage.record(r)))
  await first.usage.loadTotals('u1', NOW)
  const totals = first.usage.tokensUsed('u1', NOW)
  const summary = await first.usage.summary('u1', '2024-01-01', '2024-12-31')
  const to = Date.now() + 1000
  const u1Records = await first.usage.records('u1', 0, to)
  const before = await dump(first.store, first.usage)
  const size = first.usage.size
  t.is(size, records.length)
  await first.close()

  const second = await openLedger(t, { dir: first.dir, maxBatch: 16 })
  t.is(second.usage.size, size, 'same size')
  await second.usage.loadTotals('u1', NOW)
  t.alike(second.usage.tokensUsed('u1', NOW), totals, 'same totals')
  t.ok(totals.month > totals.day && totals.day > 0, `totals are not trivial: ${JSON.stringify(totals)}`)
  t.alike(await second.usage.summary('u1', '2024-01-01', '2024-12-31'), summary, 'same summary')
  t.alike(await second.usage.records('u1', 0, to), u1Records, 'same records')

  // Counters continue from the stored values, and commits keep numbering.
  const more = [rec({ userId: 'u1', ts: NOW, model: 'm1', promptTokens: 1000, completionTokens: 1 })]
  await second.usage.record(more[0] as UsageRecord)
  const after = await dump(second.store, second.usage)
  const commits = (before.meta?.commits ?? 0) + 1
  t.alike(after.meta, { commits, records: records.length + 1, journalLength: commits })
  t.alike(sortedEntries(after.counters), sortedEntries(expectedCounters([...records, ...more])))
  t.alike(second.usage.tokensUsed('u1', NOW), { day: totals.day + 1001, month: totals.month + 1001 })
  t.is(second.usage.size, records.length + 1)
})

test('usage: close writes queued records; record after close rejects with ERR_UNAVAILABLE', async (t) => {
  const first = await openLedger(t)
  const queued = Array.from({ length: 25 }, () => first.usage.record(rec({ userId: 'late' })))
  const closing = first.usage.close()
  await rejectsWith(t, first.usage.record(rec()), 'ERR_UNAVAILABLE', 'while closing')
  await closing
  const settled = await Promise.allSettled(queued)
  t.is(settled.filter((s) => s.status === 'fulfilled').length, 25, 'records accepted before close resolved')
  await rejectsWith(t, first.usage.record(rec()), 'ERR_UNAVAILABLE', 'after close')
  await rejectsWith(t, first.usage.summary('late', '2024-05-01', '2024-05-31'), 'ERR_UNAVAILABLE')
  await rejectsWith(t, first.usage.records('late', 0, Date.now()), 'ERR_UNAVAILABLE')
  await rejectsWith(t, first.usage.loadTotals('late', NOW), 'ERR_UNAVAILABLE')
  await first.store.close()

  const second = await openLedger(t, { dir: first.dir })
  t.is(second.usage.size, 25, 'the queued records were written')
  const s = await second.usage.summary('late', '2024-05-15', '2024-05-15')
  t.alike(s.total, { requests: 25, errors: 0, promptTokens: 250, completionTokens: 125 })
})

test('usage: a failed commit rejects its records with ERR_INTERNAL and drops them from the totals', async (t) => {
  const { usage } = await openLedger(t)
  await usage.record(rec({ userId: 'u', ts: NOW, promptTokens: 1, completionTokens: 1 }))
  await usage.loadTotals('u', NOW)
  // The journal's file goes away under the ledger: the next group cannot be written.
  await (usage as unknown as { journal: { close(): Promise<void> } }).journal.close()
  const failing = [
    usage.record(rec({ userId: 'u', ts: NOW, promptTokens: 5, completionTokens: 1 })),
    usage.record(rec({ userId: 'u', ts: NOW, model: 'm2', promptTokens: 7, completionTokens: 0 })),
  ]
  t.alike(usage.tokensUsed('u', NOW), { day: 15, month: 15 }, 'queued: counted')
  await rejectsWith(t, failing[0] as Promise<void>, 'ERR_INTERNAL')
  await rejectsWith(t, failing[1] as Promise<void>, 'ERR_INTERNAL')
  t.alike(usage.tokensUsed('u', NOW), { day: 2, month: 2 }, 'failed: no longer counted')
  t.is(usage.size, 1, 'only the committed record')
})

test('usage: records journaled but not indexed when the process died are indexed at the next open, once', async (t) => {
  const first = await openLedger(t)
  await first.usage.record(rec({ userId: 'u1', promptTokens: 3, completionTokens: 4 }))
  await first.usage.indexed()
  // From here on the index falls behind, as if the process were killed before it caught up.
  ;(first.usage as unknown as { index: { indexSoon: () => void } }).index.indexSoon = () => {}
  const late = Array.from({ length: 25 }, (_, i) =>
    rec({ userId: i % 2 ? 'u1' : 'u2', promptTokens: i, completionTokens: 1 }),
  )
  await Promise.all(late.map((r) => first.usage.record(r)))
  const stale = await (await first.store.bee(USAGE_BEE)).get<{ journalLength: number }>('meta/ledger')
  t.is(stale?.value.journalLength, 1, 'the index holds only the first block')
  await first.store.close() // no usage.close(): nothing gets to finish

  const second = await openLedger(t, { dir: first.dir })
  t.is(second.usage.size, 26, 'every acknowledged record is there after the restart')
  const d = await dump(second.store, second.usage)
  t.is(d.meta?.records, 26)
  t.is(d.meta?.journalLength, d.meta?.commits)
  const all = [rec({ userId: 'u1', promptTokens: 3, completionTokens: 4 }), ...late]
  const ids = d.usage.flatMap((e) => e.records.map((r) => r.id))
  t.is(ids.length, 26, 'each record indexed once')
  t.is(new Set(ids).size, 26)
  const counters = sortedEntries(d.counters)
  t.alike(counters, sortedEntries(expectedCounters(all)), 'counters count each record once')
  await second.usage.loadTotals('u2', NOW)
  const u2 = late
    .filter((r) => r.userId === 'u2')
    .reduce((n, r) => n + r.promptTokens + r.completionTokens, 0)
  t.alike(
    second.usage.tokensUsed('u2', NOW),
    { day: u2, month: u2 },
    'totals from the index, nothing pending twice',
  )
})

test('usage: a failed index write is retried; nothing acknowledged is lost', async (t) => {
  const { store, usage } = await openLedger(t)
  const bee = await store.bee(USAGE_BEE)
  const realBatch = bee.batch.bind(bee)
  let failures = 1
  ;(bee as unknown as { batch: () => unknown }).batch = () => {
    if (failures-- > 0) throw new Error('disk hiccup')
    return realBatch()
  }
  const records = Array.from({ length: 10 }, (_, i) =>
    rec({ userId: 'u1', promptTokens: i, completionTokens: 1 }),
  )
  await Promise.all(records.map((r) => usage.record(r)))
  t.is(usage.size, 10, 'acknowledged from the journal')
  await rejectsWith(
    t,
    usage.summary('u1', '2024-01-01', '2024-12-31'),
    'ERR_INTERNAL',
    'readers are told while the index is behind',
  )
  let summary = null
  for (let i = 0; i < 40 && !summary; i++) {
    await new Promise((r) => setTimeout(r, 100))
    summary = await usage.summary('u1', '2024-01-01', '2024-12-31').catch(() => null)
  }
  t.ok(summary, 'the index caught up by itself')
  t.is(summary?.total.requests, 10)
  t.is(summary?.total.promptTokens, 45)
})
