import type { UsageCounter, UsageRecord, UsageRow } from '../../kernel/accounts.js'

/**
 * How the usage ledger lays its records out: the journal block, the Hyperbee's `meta/ledger`,
 * a record as its user's `usage/` group stores it, counters and their sums, UTC days and months.
 */

/**
 * A user's records of consecutive journal blocks share one `usage/` key while
 * their blocks lie within RECORD_GROUP_SPAN_MS of the first and they number
 * under RECORD_GROUP_MAX: one Hyperbee put per user and index batch rather
 * than one per block (at one request at a time, every block is one record).
 */
export const RECORD_GROUP_SPAN_MS = 1000
export const RECORD_GROUP_MAX = 256

export interface JournalBlock {
  ts: number
  records: UsageRecord[]
}

export interface LedgerMeta {
  commits: number
  records: number
  journalLength: number
}

/** Every field but the user: a record as its user's group stores it. */
export type StoredRecord = { [K in Exclude<keyof UsageRecord, 'userId'>]-?: UsageRecord[K] | undefined }

const DAY_MS = 86_400_000
const two = (n: number) => (n < 10 ? `0${n}` : `${n}`)

/**
 * YYYY-MM-DD (UTC) of a time in years 0–9999, as `toISOString()` writes it.
 * Every record's counters and month totals ask for it: the civil date is
 * computed from the day number (Hinnant's days-to-civil), without a Date and
 * its ISO string per call (a few % of a gateway's CPU under load:
 * docs/benchmarks.md, issue 16).
 */
export function utcDay(ts: number): string {
  // As Date does: a time is whole milliseconds, truncated toward zero; out of range is an error.
  const ms = Math.trunc(ts)
  if (!Number.isFinite(ms) || Math.abs(ms) > 8.64e15) throw new RangeError('Invalid time value')
  const z = Math.floor(ms / DAY_MS) + 719_468
  const era = Math.floor(z / 146_097)
  const doe = z - era * 146_097
  const yoe = Math.floor(
    (doe - Math.floor(doe / 1460) + Math.floor(doe / 36_524) - Math.floor(doe / 146_096)) / 365,
  )
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100))
  const mp = Math.floor((5 * doy + 2) / 153)
  const day = doy - Math.floor((153 * mp + 2) / 5) + 1
  const month = mp < 10 ? mp + 3 : mp - 9
  const year = yoe + era * 400 + (month <= 2 ? 1 : 0)
  return `${String(year).padStart(4, '0')}-${two(month)}-${two(day)}`
}

export function utcMonth(ts: number): string {
  return utcDay(ts).slice(0, 7)
}

export const DAY_RE = /^\d{4}-\d{2}-\d{2}$/

export function emptyCounter(): UsageCounter {
  return { requests: 0, errors: 0, promptTokens: 0, completionTokens: 0 }
}

/** The sum of `rows` (those `pick` keeps). */
export function sumRows(rows: UsageRow[], pick: (r: UsageRow) => boolean = () => true): UsageCounter {
  const total = emptyCounter()
  for (const r of rows) {
    if (!pick(r)) continue
    total.requests += r.requests
    total.errors += r.errors
    total.promptTokens += r.promptTokens
    total.completionTokens += r.completionTokens
  }
  return total
}

/**
 * A record as its user's `usage/` group stores it: without the user (the key
 * names it), as one literal; a rest-copy of it was slow to make and to encode.
 */
export function storedRecord(r: UsageRecord): StoredRecord {
  return {
    id: r.id,
    ts: r.ts,
    keyId: r.keyId,
    model: r.model,
    processor: r.processor,
    promptTokens: r.promptTokens,
    completionTokens: r.completionTokens,
    ms: r.ms,
    status: r.status,
    // Undefined leaves it out of the JSON, as the rest-copy did.
    code: r.code,
  }
}

export function addTo(c: UsageCounter, r: UsageRecord): void {
  c.requests++
  if (r.status === 'error') c.errors++
  c.promptTokens += r.promptTokens
  c.completionTokens += r.completionTokens
}
