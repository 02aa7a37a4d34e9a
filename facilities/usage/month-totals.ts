import type Hyperbee from 'hyperbee'
import type { UsageCounter, UsageRecord } from '../../kernel/accounts.js'
import { MeshError } from '../../kernel/errors.js'
import type { Serial } from '../lib/serial.js'
import { utcDay, utcMonth } from './ledger-layout.js'

/**
 * Tokens each user spent today and this month (UTC), for the limits' daily and
 * monthly quotas: the month's committed counters, read from the index once per
 * user and then kept up to date as blocks are indexed, plus the records still
 * pending (journaled or queued but not indexed), so a quota sees a record from
 * the moment it is handed in.
 */

/** Users whose month totals are kept in memory; others are read again when needed. */
const MAX_MONTHS_CACHED = 10_000

/** Tokens a user spent per UTC day of one month, committed and in flight. */
interface UserMonth {
  month: string
  byDay: Map<string, number>
}

export class MonthTotals {
  private readonly serial: Serial
  private bee: Hyperbee | null = null
  private readonly months = new Map<string, UserMonth>()
  private readonly loadingMonths = new Map<string, Promise<void>>()
  /** Tokens of records not indexed yet, by `<userId>/<day>` and `<userId>/<month>`. */
  private readonly pending = new Map<string, number>()

  /** `serial`: the index writes' too, so a month read and an index write each see the other whole. */
  constructor(serial: Serial) {
    this.serial = serial
  }

  /** Month reads read `bee` (the index) until `close()`. */
  open(bee: Hyperbee): void {
    this.bee = bee
  }

  close(): void {
    this.bee = null
  }

  /** Counts a record's tokens as pending (`sign` 1), or stops counting them (-1: it failed). */
  addPending(r: UsageRecord, sign: 1 | -1): void {
    const day = utcDay(r.ts)
    const tokens = sign * (r.promptTokens + r.completionTokens)
    for (const key of [`${r.userId}/${day}`, `${r.userId}/${day.slice(0, 7)}`]) {
      const n = (this.pending.get(key) ?? 0) + tokens
      if (n === 0) this.pending.delete(key)
      else this.pending.set(key, n)
    }
  }

  /** Records now in the index: no longer pending, and in their users' loaded months. */
  indexed(records: UsageRecord[]): void {
    for (const r of records) {
      this.addPending(r, -1)
      const month = this.months.get(r.userId)
      if (month?.month !== utcMonth(r.ts)) continue
      const day = utcDay(r.ts)
      month.byDay.set(day, (month.byDay.get(day) ?? 0) + r.promptTokens + r.completionTokens)
    }
  }

  /**
   * Loads a user's token totals for the current UTC month (once; later calls
   * are free until the month changes). Call before `tokensUsed`.
   * @throws ERR_UNAVAILABLE when the ledger is closed
   */
  async load(userId: string, now: number): Promise<void> {
    if (this.has(userId, now)) return
    const month = utcMonth(now)
    const key = `${userId}/${month}`
    let loading = this.loadingMonths.get(key)
    if (!loading) {
      loading = this.serial
        .run(() => this.readMonth(userId, month))
        .finally(() => this.loadingMonths.delete(key))
      this.loadingMonths.set(key, loading)
    }
    await loading
  }

  /** Reads a month's counters and installs them, between index writes (see `serial`). */
  private async readMonth(userId: string, month: string): Promise<void> {
    const bee = this.bee
    if (!bee) throw new MeshError('ERR_UNAVAILABLE', 'ledger is closed')
    if (this.months.get(userId)?.month === month) return
    const byDay = new Map<string, number>()
    const prefix = `counters/${userId}/${month}`
    for await (const entry of bee.createReadStream<UsageCounter>({ gte: `${prefix}-`, lt: `${prefix}.` })) {
      const day = entry.key.slice(`counters/${userId}/`.length, `counters/${userId}/`.length + 10)
      byDay.set(day, (byDay.get(day) ?? 0) + entry.value.promptTokens + entry.value.completionTokens)
    }
    this.months.delete(userId)
    this.months.set(userId, { month, byDay })
    if (this.months.size > MAX_MONTHS_CACHED) {
      // The least recently loaded; `load` reads it again before that user's next admission.
      const oldest = this.months.keys().next().value
      if (oldest !== undefined) this.months.delete(oldest)
    }
  }

  /** Whether a user's totals for the month of `now` are loaded: `load` would do nothing. */
  has(userId: string, now: number): boolean {
    return this.months.get(userId)?.month === utcMonth(now)
  }

  /** Tokens a user spent today and this month (UTC), including records not yet indexed. */
  tokensUsed(userId: string, now: number): { day: number; month: number } {
    const today = utcDay(now)
    const thisMonth = today.slice(0, 7)
    const pendingToday = this.pending.get(`${userId}/${today}`) ?? 0
    const pendingMonth = this.pending.get(`${userId}/${thisMonth}`) ?? 0
    const totals = this.months.get(userId)
    if (!totals || totals.month !== thisMonth) return { day: pendingToday, month: pendingMonth }
    let month = pendingMonth
    for (const n of totals.byDay.values()) month += n
    return { day: (totals.byDay.get(today) ?? 0) + pendingToday, month }
  }
}
