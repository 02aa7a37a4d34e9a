import type Hyperbee from 'hyperbee'
import type { UsageCounter, UsageRecord, UsageRow, UsageSummary } from '../../kernel/accounts.js'
import { MeshError } from '../../kernel/errors.js'
import { DAY_RE, RECORD_GROUP_SPAN_MS, sumRows } from './ledger-layout.js'

/**
 * The ledger's read queries, over its Hyperbee. Each takes `caughtUp`, which
 * resolves with the bee once the index holds every acknowledged record, so a
 * reader sees all of them; arguments are checked before it waits.
 */

/** How much later than a record its journal block may be stamped, at most, for `readRecords`. */
const RECORD_READ_SLACK_MS = 60_000

/**
 * Counters of one user per UTC day and model, `from`..`to` inclusive (YYYY-MM-DD).
 * @throws ERR_BAD_REQUEST on a bad date
 */
export async function readSummary(
  caughtUp: () => Promise<Hyperbee>,
  userId: string,
  from: string,
  to: string,
  model?: string,
): Promise<UsageSummary> {
  if (!DAY_RE.test(from) || !DAY_RE.test(to)) throw MeshError.badRequest('dates are YYYY-MM-DD')
  if (from > to) throw MeshError.badRequest(`from ${from} is after to ${to}`)
  const bee = await caughtUp()
  const rows: UsageRow[] = []
  const base = `counters/${userId}/`
  // '/' sorts right after the day; '0' right after '/': the range covers every model of `to`.
  for await (const entry of bee.createReadStream<UsageCounter>({
    gte: `${base}${from}/`,
    lt: `${base}${to}0`,
  })) {
    const rest = entry.key.slice(base.length)
    const day = rest.slice(0, 10)
    const m = rest.slice(11)
    if (model && m !== model) continue
    rows.push({ day, model: m, ...entry.value })
  }
  return { userId, from, to, rows, total: sumRows(rows) }
}

/** One user's records made from `fromTs` to `toTs` (ms, their `ts`, both included), oldest first, at most `limit`. */
export async function readRecords(
  caughtUp: () => Promise<Hyperbee>,
  userId: string,
  fromTs: number,
  toTs: number,
  limit: number,
): Promise<UsageRecord[]> {
  const bee = await caughtUp()
  const out: UsageRecord[] = []
  const base = `usage/${userId}/`
  // A key holds the records of up to RECORD_GROUP_SPAN_MS after its time, and a record's block is
  // written a moment after the record: read a little wider and keep the records inside the range.
  const range = {
    gte: base + new Date(Math.max(0, fromTs - RECORD_GROUP_SPAN_MS)).toISOString(),
    lt: `${base + new Date(toTs + RECORD_READ_SLACK_MS).toISOString()}0`,
  }
  for await (const entry of bee.createReadStream<{ records: Array<Omit<UsageRecord, 'userId'>> }>(range)) {
    for (const r of entry.value.records) {
      if (r.ts < fromTs || r.ts > toTs) continue
      out.push({ userId, ...r })
      if (out.length >= limit) return out
    }
  }
  return out
}
