import test from 'brittle'
import { LimitsFacility, type Subject, WINDOW_MS } from '../../facilities/limits.facility.js'
import type { KeyLimits, UserLimits } from '../../kernel/config.js'
import type { MeshError } from '../../kernel/errors.js'
import { thrown } from '../helpers/assert.js'

const T0 = Date.UTC(2024, 4, 15, 12, 0, 0) // 2024-05-15T12:00:00Z
const DAY_MS = 86_400_000

const UNLIMITED: UserLimits = { rpm: null, tpm: null, dailyTokens: null, monthlyTokens: null }

function subject(
  userLimits: Partial<UserLimits>,
  opts: { userId?: string; keyId?: string | null; keyLimits?: Partial<KeyLimits> | null } = {},
): Subject {
  const { userId = 'u1', keyId = null, keyLimits = null } = opts
  return {
    userId,
    username: `name-of-${userId}`,
    keyId,
    userLimits: { ...UNLIMITED, ...userLimits },
    keyLimits: keyLimits ? { rpm: null, tpm: null, ...keyLimits } : null,
  }
}

/** A limits facility whose ledger reports the given totals (mutable through the returned object). */
function limits(used: { day: number; month: number } = { day: 0, month: 0 }) {
  const calls: Array<[string, number]> = []
  const lim = new LimitsFacility({
    tokensUsed: (userId, now) => {
      calls.push([userId, now])
      return { day: used.day, month: used.month }
    },
  })
  return { lim, used, calls }
}

/** Counts admits of `n` calls at `now`, with the codes of the refusals. */
function burst(lim: LimitsFacility, s: Subject, n: number, now: number) {
  let admitted = 0
  const refused: MeshError[] = []
  for (let i = 0; i < n; i++) {
    const e = thrown(() => lim.admit(s, now))
    if (e) refused.push(e)
    else admitted++
  }
  return { admitted, refused }
}

test('limits: 200 synchronous admits against rpm 50 admit exactly 50', (t) => {
  const { lim } = limits()
  const s = subject({ rpm: 50 })
  let admitted = 0
  const refusals: MeshError[] = []
  for (let i = 0; i < 200; i++) {
    // Real clock: all within the same few ms.
    const e = thrown(() => lim.admit(s))
    if (e) refusals.push(e)
    else admitted++
  }
  t.is(admitted, 50, 'exactly the limit is admitted')
  t.is(refusals.length, 150, 'the rest are refused')
  t.ok(
    refusals.every((e) => e.code === 'ERR_RATE_LIMITED'),
    'every refusal is ERR_RATE_LIMITED',
  )
  t.ok(
    refusals.every((e) => {
      const ms = e.details?.retryAfterMs
      return typeof ms === 'number' && ms > 0 && ms <= WINDOW_MS
    }),
    'every retryAfterMs is in (0, 60000]',
  )
  const first = refusals[0] as MeshError
  t.alike(
    { limit: first.details?.limit, scope: first.details?.scope, max: first.details?.max },
    { limit: 'rpm', scope: 'user', max: 50 },
    'details name the limit, scope and max',
  )
  t.is(first.httpStatus, 429)
})

test('limits: rpm with explicit times: exact retry-after and the window sliding', (t) => {
  const { lim } = limits()
  const s = subject({ rpm: 3 })
  lim.admit(s, T0)
  lim.admit(s, T0 + 10_000)
  lim.admit(s, T0 + 20_000)
  const e = thrown(() => lim.admit(s, T0 + 30_000))
  t.is(e?.code, 'ERR_RATE_LIMITED')
  t.is(e?.details?.retryAfterMs, 30_000, 'until the oldest request leaves the window')
  t.is(thrown(() => lim.admit(s, T0 + WINDOW_MS - 1))?.details?.retryAfterMs, 1, '1 ms before it leaves')
  t.is(
    thrown(() => lim.admit(s, T0 + WINDOW_MS)),
    null,
    'at exactly 60 s the oldest has left: admitted',
  )
  const again = thrown(() => lim.admit(s, T0 + WINDOW_MS + 1))
  t.is(again?.code, 'ERR_RATE_LIMITED', 'the slot freed was taken again')
  t.is(again?.details?.retryAfterMs, 10_000 - 1, 'now the request at +10 s is the oldest')
  t.is(
    thrown(() => lim.admit(s, T0 + 10_000 + WINDOW_MS)),
    null,
    'second slot frees at +70 s',
  )
  // Refused attempts are not counted: after the whole window only admitted ones count.
  const later = T0 + 10_000 + 2 * WINDOW_MS
  const { admitted, refused } = burst(lim, s, 10, later)
  t.is(admitted, 3, 'a full window later all 3 slots are free again')
  t.is(refused.length, 7)
})

test('limits: retry-after is the whole window for a burst at one instant', (t) => {
  const { lim } = limits()
  const s = subject({ rpm: 5 })
  const { admitted, refused } = burst(lim, s, 8, T0)
  t.is(admitted, 5)
  t.alike(
    refused.map((e) => e.details?.retryAfterMs),
    [WINDOW_MS, WINDOW_MS, WINDOW_MS],
  )
})

test('limits: key limits are independent of user limits', (t) => {
  const { lim } = limits()
  // User unlimited, key limited to 2.
  const keyA = subject({ rpm: null }, { keyId: 'kA', keyLimits: { rpm: 2 } })
  const keyB = subject({ rpm: null }, { keyId: 'kB', keyLimits: { rpm: 2 } })
  const r1 = burst(lim, keyA, 5, T0)
  t.is(r1.admitted, 2, 'key A admits 2')
  t.alike(
    r1.refused.map((e) => [e.code, e.details?.scope, e.details?.max]),
    [
      ['ERR_RATE_LIMITED', 'key', 2],
      ['ERR_RATE_LIMITED', 'key', 2],
      ['ERR_RATE_LIMITED', 'key', 2],
    ],
  )
  t.is(lim.state(keyA, T0).rpm?.used, 2, 'requests refused by the key are not counted for the user')
  t.is(burst(lim, keyB, 5, T0).admitted, 2, 'key B of the same user has its own window')
  const noKey = subject({ rpm: null })
  t.is(burst(lim, noKey, 20, T0).admitted, 20, 'the user without a key is not limited')

  // A user limit across keys: user rpm 5, each key rpm 3.
  const { lim: lim2 } = limits()
  const k1 = subject({ rpm: 5 }, { userId: 'u2', keyId: 'k1', keyLimits: { rpm: 3 } })
  const k2 = subject({ rpm: 5 }, { userId: 'u2', keyId: 'k2', keyLimits: { rpm: 3 } })
  t.is(burst(lim2, k1, 10, T0).admitted, 3, 'key 1: its own limit first')
  const r2 = burst(lim2, k2, 10, T0)
  t.is(r2.admitted, 2, 'key 2: only what is left of the user limit')
  t.is(r2.refused[0]?.details?.scope, 'user', 'refused by the user limit')
  const s = lim2.state(k2, T0)
  t.is(s.rpm?.used, 5, 'user counted 5 requests')
  t.is(s.keyRpm?.used, 2, 'key 2 counted only its admitted requests')
  t.is(lim2.state(k1, T0).keyRpm?.used, 3, 'key 1 counted 3')
  // A key without its own limits: only the user's apply.
  const k3 = subject({ rpm: 7 }, { userId: 'u3', keyId: 'k3', keyLimits: null })
  t.is(burst(lim2, k3, 10, T0).admitted, 7)
})

test('limits: another user is not affected', (t) => {
  const { lim } = limits()
  const a = subject({ rpm: 2 }, { userId: 'a' })
  const b = subject({ rpm: 2 }, { userId: 'b' })
  t.is(burst(lim, a, 4, T0).admitted, 2)
  t.is(burst(lim, b, 4, T0).admitted, 2)
})

test('limits: tpm admits under the limit, refuses at it, frees when tokens leave the window', (t) => {
  const { lim } = limits()
  const s = subject({ tpm: 100 })
  lim.admit(s, T0)
  lim.addTokens(s, 60, T0)
  t.is(
    thrown(() => lim.admit(s, T0 + 1000)),
    null,
    '60 < 100: admitted',
  )
  lim.addTokens(s, 39, T0 + 10_000)
  t.is(
    thrown(() => lim.admit(s, T0 + 11_000)),
    null,
    '99 < 100: admitted',
  )
  lim.addTokens(s, 1, T0 + 20_000)
  const e = thrown(() => lim.admit(s, T0 + 21_000))
  t.is(e?.code, 'ERR_RATE_LIMITED', '100 >= 100: refused')
  t.is(e?.details?.limit, 'tpm')
  t.is(e?.details?.max, 100)
  t.is(e?.details?.retryAfterMs, 39_000, 'until the 60 tokens of T0 leave the window (T0 + 60 s)')
  t.is(
    thrown(() => lim.admit(s, T0 + WINDOW_MS)),
    null,
    'then 40 left in the window: admitted',
  )

  // Over the limit (requests running at once): wait until enough tokens leave.
  const { lim: lim2 } = limits()
  const s2 = subject({ tpm: 100 })
  lim2.addTokens(s2, 80, T0)
  lim2.addTokens(s2, 80, T0 + 5000)
  lim2.addTokens(s2, 30, T0 + 10_000)
  // Sum 190; dropping 80 (T0) leaves 110 >= 100; dropping the next 80 (T0+5s) leaves 30.
  const e2 = thrown(() => lim2.admit(s2, T0 + 20_000))
  t.is(
    e2?.details?.retryAfterMs,
    45_000,
    'retry when the sum falls under the limit, not at the first leaving',
  )
  t.is(lim2.state(s2, T0 + 20_000).tpm?.used, 190)
  t.is(thrown(() => lim2.admit(s2, T0 + WINDOW_MS))?.code, 'ERR_RATE_LIMITED', '110 left at T0 + 60 s')
  t.is(
    thrown(() => lim2.admit(s2, T0 + 5000 + WINDOW_MS)),
    null,
    '30 left at T0 + 65 s',
  )
})

test('limits: addTokens ignores zero and negative amounts and counts keys', (t) => {
  const { lim } = limits()
  const s = subject({ tpm: 10 }, { keyId: 'k', keyLimits: { tpm: 5 } })
  lim.addTokens(s, 0, T0)
  lim.addTokens(s, -50, T0)
  t.is(lim.state(s, T0).tpm?.used, 0)
  lim.addTokens(s, 5, T0)
  const e = thrown(() => lim.admit(s, T0))
  t.is(e?.code, 'ERR_RATE_LIMITED')
  t.is(e?.details?.scope, 'key', 'the key tpm (5) is reached, the user (10) is not')
  t.is(lim.state(s, T0).keyTpm?.used, 5)
  const sameUserNoKey = subject({ tpm: 10 })
  t.is(
    thrown(() => lim.admit(sameUserNoKey, T0)),
    null,
    'without the key the user is still under',
  )
})

test('limits: daily quota: ERR_QUOTA_EXCEEDED until the next UTC midnight', (t) => {
  const { lim, used } = limits({ day: 999, month: 999 })
  const s = subject({ dailyTokens: 1000 })
  const now = Date.UTC(2024, 4, 15, 22, 30, 0)
  t.is(
    thrown(() => lim.admit(s, now)),
    null,
    '999 < 1000: admitted',
  )
  used.day = 1000
  const e = thrown(() => lim.admit(s, now))
  t.is(e?.code, 'ERR_QUOTA_EXCEEDED')
  t.is(e?.details?.limit, 'dailyTokens')
  t.is(e?.details?.max, 1000)
  t.is(e?.details?.retryAfterMs, 90 * 60_000, '1 h 30 min to midnight UTC')
  t.is(e?.httpStatus, 429)
  const endOfMonth = Date.UTC(2024, 0, 31, 23, 59, 59, 500)
  t.is(thrown(() => lim.admit(s, endOfMonth))?.details?.retryAfterMs, 500, 'across a month boundary')
  const justAfterMidnight = Date.UTC(2024, 4, 16, 0, 0, 0, 1)
  t.is(thrown(() => lim.admit(s, justAfterMidnight))?.details?.retryAfterMs, DAY_MS - 1)
})

test('limits: monthly quota: ERR_QUOTA_EXCEEDED until the first of next month (UTC)', (t) => {
  const { lim, used } = limits({ day: 0, month: 5000 })
  const s = subject({ monthlyTokens: 5000 })
  const feb15 = Date.UTC(2024, 1, 15, 0, 0, 0)
  const e = thrown(() => lim.admit(s, feb15))
  t.is(e?.code, 'ERR_QUOTA_EXCEEDED')
  t.is(e?.details?.limit, 'monthlyTokens')
  t.is(e?.details?.max, 5000)
  t.is(e?.details?.retryAfterMs, 15 * DAY_MS, '2024 is a leap year: Feb 15 to Mar 1 is 15 days')
  const dec31 = Date.UTC(2024, 11, 31, 12, 0, 0)
  t.is(thrown(() => lim.admit(s, dec31))?.details?.retryAfterMs, DAY_MS / 2, 'December rolls into January')
  used.month = 4999
  t.is(
    thrown(() => lim.admit(s, dec31)),
    null,
    'under the quota: admitted',
  )
  // Daily is checked before monthly.
  const both = subject({ dailyTokens: 10, monthlyTokens: 10 })
  used.day = 10
  used.month = 10
  t.is(thrown(() => lim.admit(both, dec31))?.details?.limit, 'dailyTokens')
})

test('limits: the ledger is asked with the subject and time, and only when a quota is set', (t) => {
  const { lim, calls } = limits()
  lim.admit(subject({ rpm: 10 }), T0)
  t.is(calls.length, 0, 'no quota: the ledger is not consulted')
  lim.admit(subject({ dailyTokens: 10 }, { userId: 'quota-user' }), T0 + 5)
  t.alike(calls, [['quota-user', T0 + 5]])
})

test('limits: null limits mean unlimited', (t) => {
  const { lim } = limits({ day: 1e12, month: 1e12 })
  const s = subject({}, { keyId: 'k', keyLimits: {} })
  lim.addTokens(s, 1e9, T0)
  const { admitted } = burst(lim, s, 5000, T0)
  t.is(admitted, 5000, 'every request admitted, whatever the tokens and ledger say')
  const st = lim.state(s, T0)
  t.alike(st.rpm, { limit: null, used: 5000, remaining: null, resetMs: WINDOW_MS })
  t.alike(st.dailyTokens, { limit: null, used: 1e12, remaining: null, resetMs: DAY_MS / 2 })
})

test('limits: state() reports limit, used, remaining and reset for each limit', (t) => {
  const { lim, used } = limits({ day: 300, month: 4000 })
  const s = subject(
    { rpm: 10, tpm: 1000, dailyTokens: 500, monthlyTokens: 3000 },
    { keyId: 'k1', keyLimits: { rpm: 4, tpm: null } },
  )
  const fresh = lim.state(s, T0)
  t.alike(fresh.rpm, { limit: 10, used: 0, remaining: 10, resetMs: 0 }, 'nothing used: reset 0')
  t.alike(fresh.tpm, { limit: 1000, used: 0, remaining: 1000, resetMs: 0 })
  t.alike(fresh.keyRpm, { limit: 4, used: 0, remaining: 4, resetMs: 0 })
  t.alike(fresh.keyTpm, { limit: null, used: 0, remaining: null, resetMs: 0 })

  lim.admit(subject({ rpm: 10, tpm: 1000 }, { keyId: 'k1', keyLimits: { rpm: 4 } }), T0)
  lim.admit(subject({ rpm: 10, tpm: 1000 }, { keyId: 'k1', keyLimits: { rpm: 4 } }), T0 + 15_000)
  lim.addTokens(s, 250, T0 + 20_000)
  const now = T0 + 30_000
  const st = lim.state(s, now)
  t.alike(st.rpm, { limit: 10, used: 2, remaining: 8, resetMs: 30_000 })
  t.alike(st.tpm, { limit: 1000, used: 250, remaining: 750, resetMs: 50_000 })
  t.alike(st.dailyTokens, { limit: 500, used: 300, remaining: 200, resetMs: 12 * 3_600_000 - 30_000 })
  // 2024-05-15T12:00:30Z to 2024-06-01: 16 days 12 h minus 30 s; over the quota: remaining 0, not negative.
  t.alike(st.monthlyTokens, {
    limit: 3000,
    used: 4000,
    remaining: 0,
    resetMs: 16 * DAY_MS + 12 * 3_600_000 - 30_000,
  })
  t.alike(st.keyRpm, { limit: 4, used: 2, remaining: 2, resetMs: 30_000 })
  t.alike(st.keyTpm, { limit: null, used: 250, remaining: null, resetMs: 50_000 })
  t.alike(Object.keys(st).sort(), ['dailyTokens', 'keyRpm', 'keyTpm', 'monthlyTokens', 'rpm', 'tpm'])
  t.alike(
    Object.keys(lim.state(subject({}), now)).sort(),
    ['dailyTokens', 'monthlyTokens', 'rpm', 'tpm'],
    'no key: no key entries',
  )
  used.day = 0
  t.alike(lim.state(s, now).dailyTokens, { limit: 500, used: 0, remaining: 500, resetMs: 0 })
  const afterWindow = lim.state(s, T0 + 20_000 + WINDOW_MS)
  t.alike(afterWindow.rpm, { limit: 10, used: 0, remaining: 10, resetMs: 0 }, 'window passed')
  t.alike(afterWindow.tpm, { limit: 1000, used: 0, remaining: 1000, resetMs: 0 })
})

test('limits: long logs stay exact across compaction', (t) => {
  const { lim } = limits()
  const s = subject({ rpm: 3000 })
  t.is(burst(lim, s, 3100, T0).admitted, 3000)
  // The whole window leaves: the log prunes 3000 entries and compacts.
  t.is(burst(lim, s, 3100, T0 + WINDOW_MS).admitted, 3000, 'a new window of exactly 3000')
  t.is(lim.state(s, T0 + WINDOW_MS).rpm?.used, 3000)
  // Half leave, half stay.
  const { lim: lim2 } = limits()
  const s2 = subject({ rpm: 2000 })
  t.is(burst(lim2, s2, 1500, T0).admitted, 1500)
  t.is(burst(lim2, s2, 1000, T0 + 30_000).admitted, 500)
  t.is(burst(lim2, s2, 2000, T0 + WINDOW_MS).admitted, 1500, 'the 1500 of T0 left')
  const e = thrown(() => lim2.admit(s2, T0 + WINDOW_MS + 1))
  t.is(e?.details?.retryAfterMs, 30_000 - 1, 'the oldest are the 500 of T0 + 30 s')
  t.is(lim2.state(s2, T0 + 30_000 + WINDOW_MS).rpm?.used, 1500)
})

test('limits: open and close (sweep timer) do not keep the process alive', async (t) => {
  const { lim } = limits()
  await lim.ready()
  lim.admit(subject({ rpm: 1 }), T0)
  t.is(thrown(() => lim.admit(subject({ rpm: 1 }), T0))?.code, 'ERR_RATE_LIMITED')
  await lim.close()
  t.ok(lim.closed)
})
