import type { LimitName, LimitState } from '../kernel/accounts.js'
import type { KeyLimits, UserLimits } from '../kernel/config.js'
import { MeshError } from '../kernel/errors.js'
import { Facility } from './facility.js'

/**
 * Rate limits and quotas, decided in memory and synchronously, so a burst of
 * concurrent requests can never be over-admitted: `admit()` checks and counts
 * in one step of the event loop.
 *
 * - rpm / tpm: exact sliding 60 s windows (a log of request times, and of
 *   token counts as requests finish), per user and per API key.
 * - daily / monthly tokens: from the usage ledger's durable counters (passed
 *   in as `tokensUsed`), reset on the UTC day / month boundary.
 *
 * tpm admits while the window is under the limit; a request's tokens are only
 * known when it ends, so requests running at once may take the window past it
 * (as in LiteLLM); later requests wait until it falls back under.
 */

export const WINDOW_MS = 60_000
const SWEEP_INTERVAL_MS = 60_000

/** Who a request is charged to, with the limits that apply. */
export interface Subject {
  userId: string
  username: string
  keyId: string | null
  userLimits: UserLimits
  keyLimits: KeyLimits | null
}

/** A log of (time, amount) within the last window, with its running sum. */
class SlidingLog {
  private times: number[] = []
  private amounts: number[] = []
  private head = 0
  sum = 0

  prune(now: number): void {
    const cutoff = now - WINDOW_MS
    while (this.head < this.times.length && (this.times[this.head] as number) <= cutoff) {
      this.sum -= this.amounts[this.head] as number
      this.head++
    }
    // Compact now and then, not on every prune.
    if (this.head > 1024 && this.head * 2 > this.times.length) {
      this.times = this.times.slice(this.head)
      this.amounts = this.amounts.slice(this.head)
      this.head = 0
    }
  }

  add(now: number, amount: number): void {
    if (amount <= 0) return
    this.times.push(now)
    this.amounts.push(amount)
    this.sum += amount
  }

  get empty(): boolean {
    return this.head >= this.times.length
  }

  /** Ms from `now` until the sum drops below `limit` (0 if it already is). */
  waitUnder(limit: number, now: number): number {
    let sum = this.sum
    for (let i = this.head; i < this.times.length && sum >= limit; i++) {
      sum -= this.amounts[i] as number
      if (sum < limit) return Math.max(0, (this.times[i] as number) + WINDOW_MS - now)
    }
    return 0
  }

  /** Ms until the oldest entry leaves the window. */
  resetMs(now: number): number {
    return this.empty ? 0 : Math.max(0, (this.times[this.head] as number) + WINDOW_MS - now)
  }
}

interface Windows {
  requests: SlidingLog
  tokens: SlidingLog
}

function nextUtcDay(now: number): number {
  const d = new Date(now)
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1)
}

function nextUtcMonth(now: number): number {
  const d = new Date(now)
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1)
}

export interface LimitsFacilityOptions {
  /** Tokens a user spent today and this month (UTC): the ledger's counters. */
  tokensUsed: (userId: string, now: number) => { day: number; month: number }
}

export class LimitsFacility extends Facility {
  readonly name = 'limits'
  private readonly tokensUsed: LimitsFacilityOptions['tokensUsed']
  private readonly users = new Map<string, Windows>()
  private readonly keys = new Map<string, Windows>()
  private sweepTimer: NodeJS.Timeout | null = null

  constructor(opts: LimitsFacilityOptions) {
    super()
    const { tokensUsed } = opts
    this.tokensUsed = tokensUsed
  }

  protected override async _open(): Promise<void> {
    this.sweepTimer = setInterval(() => this.sweep(), SWEEP_INTERVAL_MS)
    this.sweepTimer.unref()
  }

  protected override async _close(): Promise<void> {
    if (this.sweepTimer) clearInterval(this.sweepTimer)
    this.sweepTimer = null
  }

  private windows(map: Map<string, Windows>, id: string): Windows {
    let w = map.get(id)
    if (!w) {
      w = { requests: new SlidingLog(), tokens: new SlidingLog() }
      map.set(id, w)
    }
    return w
  }

  /** Forgets subjects with nothing in their windows. */
  private sweep(now = Date.now()): void {
    for (const map of [this.users, this.keys]) {
      for (const [id, w] of map) {
        w.requests.prune(now)
        w.tokens.prune(now)
        if (w.requests.empty && w.tokens.empty) map.delete(id)
      }
    }
  }

  /**
   * Admits one request now and counts it, or refuses it.
   * @throws ERR_RATE_LIMITED (rpm, tpm) or ERR_QUOTA_EXCEEDED (daily, monthly tokens), with
   *         details `{ limit, scope, max, retryAfterMs }`
   */
  admit(subject: Subject, now = Date.now()): void {
    const user = this.windows(this.users, subject.userId)
    const key = subject.keyId ? this.windows(this.keys, subject.keyId) : null
    user.requests.prune(now)
    user.tokens.prune(now)
    key?.requests.prune(now)
    key?.tokens.prune(now)
    const { userLimits: ul, keyLimits: kl } = subject

    const who = (scope: 'user' | 'key') =>
      scope === 'user' ? `user '${subject.username}'` : `API key ${subject.keyId}`
    const refuse = (limit: LimitName, scope: 'user' | 'key', max: number, retryAfterMs: number): never => {
      const retry = Math.max(1, Math.ceil(retryAfterMs))
      const what =
        limit === 'rpm'
          ? `${max} requests per minute`
          : limit === 'tpm'
            ? `${max} tokens per minute`
            : limit === 'dailyTokens'
              ? `${max} tokens per day (UTC)`
              : `${max} tokens per month (UTC)`
      const code = limit === 'rpm' || limit === 'tpm' ? 'ERR_RATE_LIMITED' : 'ERR_QUOTA_EXCEEDED'
      throw new MeshError(
        code,
        `${who(scope)} is limited to ${what}; retry in ${Math.ceil(retry / 1000)} s`,
        {
          limit,
          scope,
          max,
          retryAfterMs: retry,
        },
      )
    }

    if (ul.rpm !== null && user.requests.sum >= ul.rpm)
      refuse('rpm', 'user', ul.rpm, user.requests.waitUnder(ul.rpm, now))
    if (key && kl?.rpm != null && key.requests.sum >= kl.rpm)
      refuse('rpm', 'key', kl.rpm, key.requests.waitUnder(kl.rpm, now))
    if (ul.tpm !== null && user.tokens.sum >= ul.tpm)
      refuse('tpm', 'user', ul.tpm, user.tokens.waitUnder(ul.tpm, now))
    if (key && kl?.tpm != null && key.tokens.sum >= kl.tpm)
      refuse('tpm', 'key', kl.tpm, key.tokens.waitUnder(kl.tpm, now))
    if (ul.dailyTokens !== null || ul.monthlyTokens !== null) {
      const used = this.tokensUsed(subject.userId, now)
      if (ul.dailyTokens !== null && used.day >= ul.dailyTokens)
        refuse('dailyTokens', 'user', ul.dailyTokens, nextUtcDay(now) - now)
      if (ul.monthlyTokens !== null && used.month >= ul.monthlyTokens)
        refuse('monthlyTokens', 'user', ul.monthlyTokens, nextUtcMonth(now) - now)
    }

    user.requests.add(now, 1)
    key?.requests.add(now, 1)
  }

  /** Counts the tokens of a finished request into the tpm windows. */
  addTokens(subject: Pick<Subject, 'userId' | 'keyId'>, tokens: number, now = Date.now()): void {
    if (tokens <= 0) return
    this.windows(this.users, subject.userId).tokens.add(now, tokens)
    if (subject.keyId) this.windows(this.keys, subject.keyId).tokens.add(now, tokens)
  }

  /** Where a subject stands against each of its limits (for whoami, usage and error messages). */
  state(subject: Subject, now = Date.now()): Record<string, LimitState> {
    const user = this.windows(this.users, subject.userId)
    user.requests.prune(now)
    user.tokens.prune(now)
    const used = this.tokensUsed(subject.userId, now)
    const entry = (limit: number | null, n: number, resetMs: number): LimitState => ({
      limit,
      used: n,
      remaining: limit === null ? null : Math.max(0, limit - n),
      resetMs: n > 0 ? resetMs : 0,
    })
    const out: Record<string, LimitState> = {
      rpm: entry(subject.userLimits.rpm, user.requests.sum, user.requests.resetMs(now)),
      tpm: entry(subject.userLimits.tpm, user.tokens.sum, user.tokens.resetMs(now)),
      dailyTokens: entry(subject.userLimits.dailyTokens, used.day, nextUtcDay(now) - now),
      monthlyTokens: entry(subject.userLimits.monthlyTokens, used.month, nextUtcMonth(now) - now),
    }
    if (subject.keyId && subject.keyLimits) {
      const key = this.windows(this.keys, subject.keyId)
      key.requests.prune(now)
      key.tokens.prune(now)
      out.keyRpm = entry(subject.keyLimits.rpm, key.requests.sum, key.requests.resetMs(now))
      out.keyTpm = entry(subject.keyLimits.tpm, key.tokens.sum, key.tokens.resetMs(now))
    }
    return out
  }
}
