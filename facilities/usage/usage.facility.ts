import { join } from 'node:path'
import type Hyperbee from 'hyperbee'
import type { Batch } from 'hyperbee'
import type { UsageCounter, UsageRecord, UsageSummary } from '../../kernel/accounts.js'
import { MeshError } from '../../kernel/errors.js'
import { Facility } from '../facility.js'
import { Serial } from '../lib/serial.js'
import type { Logger } from '../log.facility.js'
import type { StoreFacility } from '../store.facility.js'
import { Journal } from './journal.js'
import {
  addTo,
  emptyCounter,
  type JournalBlock,
  type LedgerMeta,
  RECORD_GROUP_MAX,
  RECORD_GROUP_SPAN_MS,
  type StoredRecord,
  storedRecord,
  sumRows,
  utcDay,
  utcMonth,
} from './ledger-layout.js'
import { MonthTotals } from './month-totals.js'
import { readRecords, readSummary } from './usage-reads.js'

// Part of the ledger's API (the gateway's usage reports use them); they live with the layout.
export { sumRows, utcDay, utcMonth }

/**
 * The usage ledger: a journal (segment files in `<store>/usage-journal/`,
 * facilities/lib/journal.ts) in front of an index (Hyperbee `usage`).
 *
 *   journal block n                                { ts, records: UsageRecord[] }   (one group commit)
 *   usage/<userId>/<group ISO time>/<n + 1>        { records: UsageRecord[] }       (that user's records of blocks n…, see RECORD_GROUP_*)
 *   counters/<userId>/<YYYY-MM-DD>/<model>         { requests, errors, promptTokens, completionTokens }
 *   meta/ledger                                    { commits, records, journalLength }
 *
 * `record()` resolves once its record is in the journal: every record that
 * arrives while a block is being appended goes into the next block, so a
 * block holds whatever came in meanwhile (group commit). An indexer then
 * writes journal blocks into the Hyperbee — the records, grouped per user and
 * block, the new counter values and `meta/ledger.journalLength` — in one
 * atomic batch, as many blocks per batch as are waiting. After a crash the
 * indexer resumes at `journalLength`: nothing is lost (the journal has it) and
 * nothing is counted twice (a block's entries and its count move together).
 *
 * Why a journal: a Hyperbee batch costs ~1.5 ms however small (tree reads on
 * every put, then the flush), so making each answer wait for one capped the
 * gateway at ~6,000 requests/s at 64 in flight; a Hypercore append (hash, sign,
 * RocksDB write) still cost a third of the gateway's throughput; a file write
 * costs ~10 µs and survives the process being killed just as well. Hyperbee
 * stays the ledger's store and query index, and readers (`summary`, `records`)
 * wait for the index to catch up first, so they see every record that has been
 * acknowledged.
 */

export const USAGE_BEE = 'usage'
/** Folder of the journal's segment files, inside the store folder. */
export const USAGE_JOURNAL = 'usage-journal'
export const DEFAULT_MAX_BATCH = 4096
const META_KEY = 'meta/ledger'
/** Journal blocks indexed in one Hyperbee batch at most. */
const MAX_BLOCKS_PER_INDEX = 1024
/** How long the index may trail the journal while nobody reads it. */
const INDEX_INTERVAL_MS = 100
/** After a failed index write: first retry, doubling up to the max. */
const INDEX_RETRY_MIN_MS = 500
const INDEX_RETRY_MAX_MS = 30_000

interface Pending {
  record: UsageRecord
  resolve: () => void
  reject: (err: unknown) => void
}

export interface UsageFacilityOptions {
  store: StoreFacility
  logger: Logger
  maxBatch?: number
}

export class UsageFacility extends Facility {
  readonly name = 'usage'
  private readonly storeFacility: StoreFacility
  private readonly log: Logger
  private readonly maxBatch: number
  private bee: Hyperbee | null = null
  private journal: Journal<JournalBlock> | null = null
  private readonly queue: Pending[] = []
  private draining: Promise<void> | null = null
  /** Journal blocks written: one per group commit. */
  private appended = 0
  private recordCount = 0
  /** Records in the blocks the index holds. */
  private indexedRecordCount = 0
  private indexRetryMs = INDEX_RETRY_MIN_MS
  /** Journal blocks written into the Hyperbee so far. */
  private indexedLength = 0
  private indexing: Promise<void> | null = null
  private indexTimer: NodeJS.Timeout | null = null
  /** Journal blocks written by this process and not indexed yet. */
  private readonly unindexed = new Map<number, JournalBlock>()
  private indexError: unknown = null
  /** Committed counter values by counter key, as far as read or written. */
  private readonly counters = new Map<string, UsageCounter>()
  private countersDay = ''
  /** Index writes and month reads run one at a time: each sees the other whole. */
  private readonly serial = new Serial()
  private readonly totals = new MonthTotals(this.serial)

  constructor(opts: UsageFacilityOptions) {
    super()
    const { store, logger, maxBatch = DEFAULT_MAX_BATCH } = opts
    this.storeFacility = store
    this.log = logger
    this.maxBatch = maxBatch
  }

  protected override async _open(): Promise<void> {
    this.bee = await this.storeFacility.bee(USAGE_BEE)
    this.totals.open(this.bee)
    const meta = (await this.bee.get<LedgerMeta>(META_KEY))?.value
    this.indexedLength = meta?.journalLength ?? 0
    this.indexedRecordCount = meta?.records ?? 0
    this.recordCount = this.indexedRecordCount
    const journal = new Journal<JournalBlock>(join(this.storeFacility.dir, USAGE_JOURNAL))
    // Acknowledged before a stop or crash but not yet in the index: count them, then index them.
    const replay = await journal.open(this.indexedLength)
    this.journal = journal
    this.appended = journal.length
    for (const { n, block } of replay) {
      this.unindexed.set(n, block)
      this.recordCount += block.records.length
      for (const r of block.records) this.totals.addPending(r, 1)
    }
    if (replay.length > 0) {
      this.log.info({ blocks: replay.length }, 'indexing the usage journal after a restart')
      await this.indexed()
    }
  }

  protected override async _close(): Promise<void> {
    // Whatever was accepted is journaled and indexed, and reads in progress end, before the store closes.
    await this.draining
    await this.indexed().catch(() => {})
    await this.serial.idle()
    if (this.indexTimer) clearTimeout(this.indexTimer)
    this.indexTimer = null
    await this.journal?.close()
    this.totals.close()
    this.bee = null
    this.journal = null
  }

  /** Records acknowledged since the ledger was created. */
  get size(): number {
    return this.recordCount
  }

  /**
   * Adds a record; resolves once it is durable (in the journal). The records
   * of one turn of the event loop share one journal write (group commit).
   * @throws ERR_UNAVAILABLE when the ledger is closed, ERR_INTERNAL when the write failed
   */
  record(record: UsageRecord): Promise<void> {
    if (!this.journal || this.closing)
      return Promise.reject(new MeshError('ERR_UNAVAILABLE', 'ledger is closed'))
    this.totals.addPending(record, 1)
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ record, resolve, reject })
      this.draining ??= this.drain()
    })
  }

  private async drain(): Promise<void> {
    // Let the records of this turn of the event loop join the first block. This yields before
    // the drain can end, so record() has set `draining` by the time the drain clears it.
    await new Promise<void>((resolve) => setImmediate(resolve))
    while (this.queue.length > 0) {
      const group = this.queue.splice(0, this.maxBatch)
      const records = group.map((p) => p.record)
      try {
        const journal = this.journal
        if (!journal) throw new MeshError('ERR_UNAVAILABLE', 'ledger is closed')
        const block: JournalBlock = { ts: Date.now(), records }
        const n = await journal.append(block)
        // The indexer takes it from here rather than reading it back from the journal.
        this.unindexed.set(n, block)
        this.appended = n + 1
        this.recordCount += records.length
        for (const p of group) p.resolve()
        this.indexLater()
      } catch (err) {
        for (const r of records) this.totals.addPending(r, -1)
        this.log.error({ err, records: group.length }, 'ledger write failed')
        const e = MeshError.internal(`usage could not be recorded: ${(err as Error).message}`, err)
        for (const p of group) p.reject(e)
      }
    }
    this.draining = null
  }

  /**
   * Indexing is not on any request's path (readers wait with `indexed()`), so
   * it runs at most every INDEX_INTERVAL_MS: fewer, larger Hyperbee batches
   * cost far less per record than one per journal block.
   */
  private indexLater(): void {
    if (this.indexTimer || this.indexing || this.indexError) return
    this.indexTimer = setTimeout(() => {
      this.indexTimer = null
      this.indexSoon()
    }, INDEX_INTERVAL_MS)
  }

  private indexSoon(): void {
    // While a failed write waits for its retry, the retry timer owns the next attempt.
    if (this.indexError) return
    if (this.indexTimer) clearTimeout(this.indexTimer)
    this.indexTimer = null
    if (!this.bee || !this.journal) return
    this.indexing ??= this.serial
      .run(() => this.indexJournal())
      .finally(() => {
        this.indexing = null
        // Blocks appended while that batch was written (at once if a batch was full).
        if (this.indexedLength < this.appended && !this.indexError) {
          if (this.appended - this.indexedLength >= MAX_BLOCKS_PER_INDEX) this.indexSoon()
          else this.indexLater()
        }
      })
    this.indexing.catch(() => {})
  }

  /**
   * Resolves once every journal block written so far is in the index.
   * @throws ERR_INTERNAL when indexing failed (the journal still has the records)
   */
  async indexed(): Promise<void> {
    const target = this.appended
    while (this.indexedLength < target) {
      if (this.indexError) {
        throw MeshError.internal(
          `usage index is behind: ${(this.indexError as Error).message}`,
          this.indexError,
        )
      }
      if (!this.indexing) this.indexSoon()
      if (!this.indexing || !this.bee) throw new MeshError('ERR_UNAVAILABLE', 'usage index is not running')
      await this.indexing
    }
  }

  /** Writes waiting journal blocks into the Hyperbee, in one batch. */
  private async indexJournal(): Promise<void> {
    const bee = this.bee
    const journal = this.journal
    if (!bee || !journal) return
    const from = this.indexedLength
    const to = Math.min(this.appended, from + MAX_BLOCKS_PER_INDEX)
    if (to <= from) return
    const touched = new Map<string, UsageCounter>()
    const indexedRecords: UsageRecord[] = []
    /** Each user's open `usage/` group: its key, its first block's time, its records. */
    const groups = new Map<string, { key: string; ts: number; records: StoredRecord[] }>()
    const batch = bee.batch()
    try {
      for (let n = from; n < to; n++) {
        const block = this.unindexed.get(n)
        if (!block) throw new Error(`journal block ${n} is missing`)
        const opened = new Set<string>()
        for (const r of block.records) {
          const { userId } = r
          let group = groups.get(userId)
          if (
            group &&
            !opened.has(userId) &&
            (block.ts - group.ts > RECORD_GROUP_SPAN_MS || group.records.length >= RECORD_GROUP_MAX)
          ) {
            await batch.put(group.key, { records: group.records })
            group = undefined
          }
          if (!group) {
            const stamp = `${new Date(block.ts).toISOString()}/${String(n + 1).padStart(12, '0')}`
            group = { key: `usage/${userId}/${stamp}`, ts: block.ts, records: [] }
            groups.set(userId, group)
          }
          // A block's records stay together: its number is in the key of the group it starts.
          opened.add(userId)
          group.records.push(storedRecord(r))
          const key = `counters/${userId}/${utcDay(r.ts)}/${r.model}`
          let c = touched.get(key)
          if (!c) {
            c = { ...(await this.committedCounter(key, batch)) }
            touched.set(key, c)
          }
          addTo(c, r)
          indexedRecords.push(r)
        }
      }
      for (const group of groups.values()) await batch.put(group.key, { records: group.records })
      for (const [key, c] of touched) await batch.put(key, c)
      const meta: LedgerMeta = {
        commits: to,
        records: this.indexedRecordCount + indexedRecords.length,
        journalLength: to,
      }
      await batch.put(META_KEY, meta)
      await batch.flush()
    } catch (err) {
      await batch.close().catch(() => {})
      // Readers are told while it lasts; the journal keeps the records, and indexing tries again.
      this.indexError = err
      this.log.error({ err, from, to, retryInMs: this.indexRetryMs }, 'usage index write failed')
      const retry = setTimeout(() => {
        this.indexTimer = null
        this.indexError = null
        this.indexSoon()
      }, this.indexRetryMs)
      retry.unref()
      this.indexTimer = retry
      this.indexRetryMs = Math.min(INDEX_RETRY_MAX_MS, this.indexRetryMs * 2)
      throw err
    }
    this.indexedLength = to
    this.indexedRecordCount += indexedRecords.length
    this.indexError = null
    this.indexRetryMs = INDEX_RETRY_MIN_MS
    for (let n = from; n < to; n++) this.unindexed.delete(n)
    await journal.release(to).catch((err) => this.log.warn({ err }, 'old journal segments not removed'))
    // Only today's counters are worth keeping: earlier days are read from the bee if ever needed.
    const today = utcDay(Date.now())
    if (today !== this.countersDay) {
      this.counters.clear()
      this.countersDay = today
    }
    for (const [key, c] of touched) this.counters.set(key, c)
    this.totals.indexed(indexedRecords)
  }

  private async committedCounter(key: string, batch: Batch): Promise<UsageCounter> {
    const cached = this.counters.get(key)
    if (cached) return cached
    const entry = await batch.get<UsageCounter>(key)
    return entry?.value ?? emptyCounter()
  }

  /**
   * Loads a user's token totals for the current UTC month (once; later calls
   * are free until the month changes). Call before `tokensUsed`.
   * @throws ERR_UNAVAILABLE when the ledger is closed
   */
  loadTotals(userId: string, now = Date.now()): Promise<void> {
    return this.totals.load(userId, now)
  }

  /** Whether a user's totals for the month of `now` are loaded: `loadTotals` would do nothing. */
  hasTotals(userId: string, now = Date.now()): boolean {
    return this.totals.has(userId, now)
  }

  /** Tokens a user spent today and this month (UTC), including records not yet flushed. */
  tokensUsed(userId: string, now = Date.now()): { day: number; month: number } {
    return this.totals.tokensUsed(userId, now)
  }

  /**
   * Counters of one user per UTC day and model, `from`..`to` inclusive (YYYY-MM-DD).
   * @throws ERR_BAD_REQUEST on a bad date
   */
  summary(userId: string, from: string, to: string, model?: string): Promise<UsageSummary> {
    return readSummary(() => this.caughtUp(), userId, from, to, model)
  }

  /** One user's records made from `fromTs` to `toTs` (ms, their `ts`, both included), oldest first, at most `limit`. */
  records(userId: string, fromTs: number, toTs: number, limit = 1000): Promise<UsageRecord[]> {
    return readRecords(() => this.caughtUp(), userId, fromTs, toTs, limit)
  }

  /** The bee, once it holds every acknowledged record: what readers read. */
  private async caughtUp(): Promise<Hyperbee> {
    await this.indexed()
    if (!this.bee) throw new MeshError('ERR_UNAVAILABLE', 'ledger is closed')
    return this.bee
  }
}
