import test from 'brittle'
import { dump, openLedger, rec, sortedEntries } from './ledger-fixture.js'

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

test('usage: with the caller quiet, a record is written at once, ahead of the turn; records of the same microtask checkpoint still share it', async (t) => {
  let quiet = true
  const { store, usage } = await openLedger(t, { quiet: () => quiet })
  let turnEnded = false
  setImmediate(() => {
    turnEnded = true
  })
  await Promise.all([usage.record(rec({ promptTokens: 2 })), usage.record(rec({ promptTokens: 3 }))])
  t.absent(turnEnded, 'written before the turn ended')
  t.alike(
    (await dump(store, usage)).meta,
    { commits: 1, records: 2, journalLength: 1 },
    'one write for the two',
  )

  quiet = false
  turnEnded = false
  setImmediate(() => {
    turnEnded = true
  })
  await usage.record(rec())
  t.ok(turnEnded, 'not quiet: gathered to the turn end')
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

test('usage: a record added as the block before it is acknowledged is written too', async (t) => {
  t.timeout(5_000)
  for (const quiet of [true, false]) {
    const { usage } = await openLedger(t, { quiet: () => quiet })
    // The second record is added from the first one's acknowledgement, while that drain ends.
    await usage.record(rec()).then(() => usage.record(rec()))
    t.is(usage.size, 2, `both written (quiet: ${quiet})`)
  }
})
