import test from 'brittle'
import { HOUR, NOW, openLedger, rec } from './ledger-fixture.js'

test('usage: loadTotals + tokensUsed count committed and queued records', async (t) => {
  const { usage } = await openLedger(t)
  const u = 'quota-user'
  // Before anything is loaded or recorded.
  t.alike(usage.tokensUsed(u, NOW), { day: 0, month: 0 })

  // Queued, not yet flushed: counted at once, for its day.
  const p1 = usage.record(rec({ userId: u, ts: NOW - HOUR, promptTokens: 7, completionTokens: 3 }))
  t.alike(usage.tokensUsed(u, NOW), { day: 10, month: 10 }, 'a queued record counts synchronously')
  t.alike(usage.tokensUsed('someone-else', NOW), { day: 0, month: 0 })
  await p1

  await Promise.all(
    [
      rec({ userId: u, ts: Date.UTC(2024, 3, 30, 23, 59), promptTokens: 100, completionTokens: 0 }), // April
      rec({ userId: u, ts: Date.UTC(2024, 4, 1, 0, 0), promptTokens: 20, completionTokens: 30 }), // May 1
      rec({ userId: u, ts: Date.UTC(2024, 4, 15, 1, 0), promptTokens: 1, completionTokens: 1, model: 'm2' }),
      rec({ userId: 'other', ts: NOW, promptTokens: 500, completionTokens: 500 }),
    ].map((r) => usage.record(r)),
  )
  await usage.loadTotals(u, NOW)
  t.alike(usage.tokensUsed(u, NOW), { day: 12, month: 62 }, 'May 15: 10 + 2; May: 50 + 12; April excluded')

  const p2 = usage.record(rec({ userId: u, ts: NOW, promptTokens: 4, completionTokens: 4 }))
  t.alike(usage.tokensUsed(u, NOW), { day: 20, month: 70 }, 'a queued record on top of committed ones')
  await p2
  t.alike(usage.tokensUsed(u, NOW), { day: 20, month: 70 }, 'once committed: counted once, not twice')

  // Many queued at once, committed together.
  const burst = Array.from({ length: 50 }, () =>
    usage.record(rec({ userId: u, ts: NOW, promptTokens: 1, completionTokens: 1 })),
  )
  t.alike(usage.tokensUsed(u, NOW), { day: 120, month: 170 })
  await Promise.all(burst)
  t.alike(usage.tokensUsed(u, NOW), { day: 120, month: 170 })

  t.alike(usage.tokensUsed(u, Date.UTC(2024, 4, 16, 0, 0)), { day: 0, month: 170 }, 'the next day')
  t.alike(usage.tokensUsed(u, Date.UTC(2024, 5, 1, 0, 0)), { day: 0, month: 0 }, 'the next month')
  await usage.loadTotals(u, Date.UTC(2024, 3, 30, 12, 0))
  t.alike(usage.tokensUsed(u, Date.UTC(2024, 3, 30, 12, 0)), { day: 100, month: 100 }, 'April loaded')
  await usage.loadTotals('other', NOW)
  t.alike(usage.tokensUsed('other', NOW), { day: 1000, month: 1000 })
})

test('usage: a queued record of an earlier day this month counts in the month total', async (t) => {
  const { usage } = await openLedger(t)
  const u = 'month-user'
  await usage.record(rec({ userId: u, ts: NOW, promptTokens: 5, completionTokens: 5 }))
  await usage.loadTotals(u, NOW)
  t.alike(usage.tokensUsed(u, NOW), { day: 10, month: 10 })
  // A request that ended just before midnight, still queued just after it.
  const yesterday = NOW - 13 * HOUR // 2024-05-14T23:00Z
  const p = usage.record(rec({ userId: u, ts: yesterday, promptTokens: 50, completionTokens: 50 }))
  t.alike(usage.tokensUsed(u, NOW), { day: 10, month: 110 }, 'queued: in the month, not today')
  await p
  t.alike(usage.tokensUsed(u, NOW), { day: 10, month: 110 }, 'committed: in the month, not today')
})

test('usage: concurrent loadTotals and records: nothing counted twice or lost', async (t) => {
  const { usage } = await openLedger(t)
  const u = 'race-user'
  const all: Array<Promise<void>> = []
  for (let round = 0; round < 10; round++) {
    for (let i = 0; i < 10; i++) {
      all.push(usage.record(rec({ userId: u, ts: NOW, promptTokens: 1, completionTokens: 2 })))
    }
    if (round === 3) all.push(usage.loadTotals(u, NOW))
    await new Promise<void>((resolve) => setImmediate(resolve))
  }
  await Promise.all(all)
  t.alike(usage.tokensUsed(u, NOW), { day: 300, month: 300 })
})
