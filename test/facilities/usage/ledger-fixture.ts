/** The usage ledger's test fixture: a ledger on a fresh store, records to feed it, and its Hyperbee as it stands. */
import type { Test } from 'brittle'
import { LogFacility } from '../../../facilities/log.facility.js'
import { StoreFacility } from '../../../facilities/store.facility.js'
import { USAGE_BEE, UsageFacility } from '../../../facilities/usage/usage.facility.js'
import type { UsageCounter, UsageRecord } from '../../../kernel/accounts.js'

const logger = new LogFacility({ level: 'silent' }).logger

export const NOW = Date.UTC(2024, 4, 15, 12, 0, 0) // 2024-05-15T12:00:00Z
export const HOUR = 3_600_000

export interface Ledger {
  dir: string
  store: StoreFacility
  usage: UsageFacility
  /** Closes the ledger, then its store. */
  close(): Promise<void>
}

export async function openLedger(
  t: Test,
  opts: { dir?: string; maxBatch?: number; quiet?: () => boolean } = {},
): Promise<Ledger> {
  const dir = opts.dir ?? (await t.tmp())
  const store = new StoreFacility({ dir })
  await store.ready()
  const usage = new UsageFacility({
    store,
    logger,
    ...(opts.maxBatch !== undefined ? { maxBatch: opts.maxBatch } : {}),
    ...(opts.quiet ? { quiet: opts.quiet } : {}),
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
export function rec(over: Partial<UsageRecord> = {}): UsageRecord {
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

export interface Dump {
  usage: Array<{ key: string; records: Array<Record<string, unknown>> }>
  counters: Map<string, UsageCounter>
  meta: { commits: number; records: number; journalLength: number } | null
}

/** The ledger's Hyperbee as it stands once every journaled record is indexed. */
export async function dump(store: StoreFacility, ledger: UsageFacility): Promise<Dump> {
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
export function expectedCounters(records: UsageRecord[]): Map<string, UsageCounter> {
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
export const dayOf = (ts: number) => new Date(ts).toISOString().slice(0, 10)

export const sortedEntries = (m: Map<string, UsageCounter>) =>
  [...m.entries()].sort(([a], [b]) => (a < b ? -1 : 1))

/** A mix over users (one a prefix of another), days, models (one with a slash) and statuses. */
export function mixedRecords(): UsageRecord[] {
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
