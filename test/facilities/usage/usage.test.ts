import test, { type Test } from 'brittle'
import { LogFacility } from '../../../facilities/log.facility.js'
import { StoreFacility } from '../../../facilities/store.facility.js'
import { USAGE_BEE, UsageFacility } from '../../../facilities/usage/usage.facility.js'
import type { UsageCounter, UsageRecord } from '../../../kernel/accounts.js'
import { rejectsWith } from '../../helpers/assert.js'

const logger = new LogFacility({ level: 'silent' }).logger

const NOW = Date.UTC(2024, 4, 15, 12, 0, 0) // 2024-05-15T12:00:00Z
const HOUR = 3_600_000

interface Ledger {
  dir: string
  store: StoreFacility
  usage: UsageFacility
  /** Closes the ledger, then its store. */
  close(): Promise<void>
}

async function openLedger(t: Test, opts: { dir?: string; maxBatch?: number } = {}): Promise<Ledger> {
  const dir = opts.dir ?? (await t.tmp())
  const store = new StoreFacility({ dir })
  await store.ready()
  const usage = new UsageFacility({
    store,
    logger,
    ...(opts.maxBatch !== undefined ? { maxBatch: opts.maxBatch } : {}),
  })
  await usage.ready()
  const close = async () => {
    await usage.close()
    await store.close()
  }
  t.teardown(close)
  return { dir, store, usage, close }
}

let seq = 0
function rec(over: Partial<UsageRecord> = {}): UsageRecord {
  return {
    id: `req-${seq++}`,
    ts: NOW,
    userId: 'u1',
    keyId: null,
    model: 'm1',
    processor: 'proc-a',
    promptTokens: 10,
    completionTokens: 5,
    ms: 12.5,
    status: 'ok',
    ...over,
  }
}

interface Dump {
  usage: Array<{ key: string; records: Array<Record<string, unknown>> }>
  counters: Map<string, UsageCounter>
  meta: { commits: number; records: number; journalLength: number } | null
}

/** The ledger's Hyperbee as it stands once every journaled record is indexed. */
async function dump(store: StoreFacility, ledger: UsageFacility): Promise<Dump> {
  await ledger.indexed()
  const bee = await store.bee(USAGE_BEE)
  const usage: Dump['usage'] = []
  for await (const e of bee.createReadStream<{ records: Array<Record<string, unknown>> }>({
    gte: 'usage/',
    lt: 'usage0',
  })) {
    usage.push({ key: e.key, records: e.value.records })
  }
  const counters = new Map<string, UsageCounter>()
  for await (const e of bee.createReadStream<UsageCounter>({ gte: 'counters/', lt: 'counters0' })) {
    counters.set(e.key, e.value)
  }
  const meta =
    (await bee.get<{ commits: number; records: number; journalLength: number }>('meta/ledger'))?.value ?? null
  return { usage, counters, meta }
}

/** The counters the records should produce, computed independently of the ledger. */
function expectedCounters(records: UsageRecord[]): Map<string, UsageCounter> {
  const out = new Map<string, UsageCounter>()
  for (const r of records) {
    const key = `counters/${r.userId}/${dayOf(r.ts)}/${r.model}`
    const c = out.get(key) ?? { requests: 0, errors: 0, promptTokens: 0, completionTokens: 0 }
    out.set(key, {
      requests: c.requests + 1,
      errors: c.errors + (r.status === 'error' ? 1 : 0),
      promptTokens: c.promptTokens + r.promptTokens,
      completionTokens: c.completionTokens + r.completionTokens,
    })
  }
  return out
}

/** YYYY-MM-DD (UTC), computed here rather than with the ledger's own helper. */
const dayOf = (ts: number) => new Date(ts).toISOString().slice(0, 10)

const sortedEntries = (m: Map<string, UsageCounter>) => [...m.entries()].sort(([a], [b]) => (a < b ? -1 : 1))

test('usage: concurrent records resolve and are group-committed', async (t) => {
  const { store, usage } = await openLedger(t)
  const users = ['u1', 'u2', 'u3']
  const batch = Array.from({ length: 120 }, (_, i) =>
    rec({ userId: users[i % 3] as string, promptTokens: i, completionTokens: 2 * i }),
  )
  const settled = await Promise.allSettled(batch.map((r) => usage.record(r)))
  t.is(settled.filter((s) => s.status === 'fulfilled').length, 120, 'every record() resolved')
  t.is(usage.size, 120)

  const d = await dump(store, usage)
  t.alike(
    d.meta,
    { commits: 1, records: 120, journalLength: 1 },
    'records of one turn of the event loop: one commit',
  )
  t.is(d.usage.length, 3, 'one usage entry per user of the commit')
  for (const [i, u] of users.entries()) {
    const entry = d.usage[i]
    t.ok(
      new RegExp(`^usage/${u}/\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}\\.\\d{3}Z/000000000001$`).test(
        entry?.key ?? '',
      ),
      `key of ${u}: ${entry?.key}`,
    )
    const mine = batch.filter((r) => r.userId === u).map(({ userId: _, ...rest }) => rest)
    t.alike(entry?.records, mine, `${u}: its 40 records, in order, without userId`)
  }

  // A second burst: one more commit.
  await Promise.all(Array.from({ length: 30 }, () => usage.record(rec())))
  const d2 = await dump(store, usage)
  t.alike(d2.meta, { commits: 2, records: 150, journalLength: 2 })
  t.is(d2.usage.filter((e) => e.key.endsWith('/000000000002')).length, 1, 'commit 2: u1 only')
  t.is(usage.size, 150)
})

test('usage: records of one event-loop turn join one commit, even from later microtasks', async (t) => {
  const { store, usage } = await openLedger(t)
  const hops = async (n: number) => {
    for (let i = 0; i < n; i++) await Promise.resolve()
    return usage.record(rec({ promptTokens: n }))
  }
  await Promise.all(Array.from({ length: 20 }, (_, i) => hops(i)))
  const d = await dump(store, usage)
  t.alike(d.meta, { commits: 1, records: 20, journalLength: 1 })
  t.alike(
    d.usage[0]?.records.map((r) => r.promptTokens),
    Array.from({ length: 20 }, (_, i) => i),
  )
})

test('usage: a record waits for the end of its turn, so records of the same turn share its write', async (t) => {
  const { store, usage } = await openLedger(t)
  let turnEnded = false
  setImmediate(() => {
    turnEnded = true
  })
  await Promise.all([usage.record(rec({ promptTokens: 2 })), usage.record(rec({ promptTokens: 3 }))])
  t.ok(turnEnded, 'gathered: written after the turn ended')
  const d = await dump(store, usage)
  t.alike(d.meta, { commits: 1, records: 2, journalLength: 1 }, 'one write for the two')
})

test('usage: records arriving during a commit go into the next one', async (t) => {
  const { store, usage } = await openLedger(t)
  const first = Array.from({ length: 5 }, () => usage.record(rec()))
  // The drain waits one setImmediate, then starts the commit (which needs I/O); this runs after that.
  await new Promise<void>((resolve) => setImmediate(resolve))
  const second = Array.from({ length: 7 }, () => usage.record(rec()))
  await Promise.all([...first, ...second])
  const d = await dump(store, usage)
  t.alike(d.meta, { commits: 2, records: 12, journalLength: 2 })
  t.alike(
    d.usage.map((e) => e.records.length),
    [12],
    "the two commits' records share one index key (same user, within a second)",
  )
})

test('usage: maxBatch splits a burst into commits of at most maxBatch records', async (t) => {
  const { store, usage } = await openLedger(t, { maxBatch: 10 })
  const batch = Array.from({ length: 35 }, (_, i) => rec({ promptTokens: i, completionTokens: 1 }))
  await Promise.all(batch.map((r) => usage.record(r)))
  const d = await dump(store, usage)
  t.alike(d.meta, { commits: 4, records: 35, journalLength: 4 })
  t.alike(
    d.usage.map((e) => e.records.length),
    [35],
    'one index key for the four commits',
  )
  t.alike(
    d.usage.flatMap((e) => e.records.map((r) => r.id)),
    batch.map((r) => r.id),
    'every record once, in order',
  )
  t.alike(sortedEntries(d.counters), [
    [
      'counters/u1/2024-05-15/m1',
      { requests: 35, errors: 0, promptTokens: (34 * 35) / 2, completionTokens: 35 },
    ],
  ])
})

test('usage: one index key per user for many commits, split at 256 records and after a second', async (t) => {
  // maxBatch 1: every record is a commit of its own, as at one request at a time, and all of
  // them are journaled before the index's first run (100 ms later), which takes them in one batch.
  const { store, usage } = await openLedger(t, { maxBatch: 1 })
  const made = Array.from({ length: 450 }, (_, i) => rec({ userId: i % 3 === 0 ? 'u2' : 'u1' }))
  await Promise.all(made.map((r) => usage.record(r)))
  const d = await dump(store, usage)
  t.is(d.meta?.commits, 450)
  const keysOf = (user: string) => d.usage.filter((e) => e.key.startsWith(`usage/${user}/`))
  t.alike(
    keysOf('u1').map((e) => e.records.length),
    [256, 44],
    'u1: 300 commits in two keys, the first full',
  )
  t.alike(
    keysOf('u2').map((e) => e.records.length),
    [150],
    'u2: 150 commits in one key',
  )
  t.alike(
    d.usage.flatMap((e) => e.records.map((r) => r.id)).sort(),
    made.map((r) => r.id).sort(),
    'every record once',
  )

  // A commit more than a second after a key's first starts a key of its own.
  const realNow = Date.now
  const later = realNow() + 5_000
  Date.now = () => later
  try {
    await usage.record(rec({ userId: 'u2', ts: later }))
  } finally {
    Date.now = realNow
  }
  const after = await dump(store, usage)
  t.alike(
    after.usage.filter((e) => e.key.startsWith('usage/u2/')).map((e) => e.records.length),
    [150, 1],
  )
})

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

/** A mix over users (one a prefix of another), days, models (one with a slash) and statuses. */
function mixedRecords(): UsageRecord[] {
  const days = [
    Date.UTC(2024, 3, 30, 23, 59, 59, 900), // 2024-04-30, +k ms stays in April
    Date.UTC(2024, 4, 1, 0, 0, 0, 0), // 2024-05-01
    Date.UTC(2024, 4, 2, 10, 0, 0),
    NOW,
  ]
  const models = ['m1', 'org/model:7b']
  const statuses = ['ok', 'error', 'cancelled', 'ok', 'ok'] as const
  const out: UsageRecord[] = []
  let i = 0
  for (const userId of ['u1', 'u10']) {
    for (const ts of days) {
      for (const model of models) {
        for (let k = 0; k < 3; k++) {
          const status = statuses[i % statuses.length] as UsageRecord['status']
          out.push(
            rec({
              userId,
              ts: ts + k,
              model,
              keyId: k === 0 ? null : `key-${k}`,
              promptTokens: 3 * i + 1,
              completionTokens: i % 4,
              status,
              ...(status === 'error' ? { code: 'ERR_TIMEOUT' } : {}),
            }),
          )
          i++
        }
      }
    }
  }
  return out
}

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
  ;(first.usage as unknown as { indexSoon: () => void }).indexSoon = () => {}
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
