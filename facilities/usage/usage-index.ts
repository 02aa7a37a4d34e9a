import type Hyperbee from 'hyperbee'
import type { Batch } from 'hyperbee'
import type { UsageCounter, UsageRecord } from '../../kernel/accounts.js'
import { MeshError } from '../../kernel/errors.js'
import type { Serial } from '../lib/serial.js'
import type { Logger } from '../log.facility.js'
import type { JournalEntry } from './journal.js'
import {
  addTo,
  emptyCounter,
  type JournalBlock,
  type LedgerMeta,
  RECORD_GROUP_MAX,
  RECORD_GROUP_SPAN_MS,
  type StoredRecord,
  storedRecord,
  utcDay,
} from './ledger-layout.js'

/**
 * The ledger's index: writes journal blocks into the Hyperbee — the records,
 * grouped per user and block, the new counter values and
 * `meta/ledger.journalLength` — in one atomic batch, as many blocks per batch
 * as are waiting. After a crash it resumes at `journalLength`: nothing is lost
 * (the journal has it) and nothing is counted twice (a block's entries and its
 * count move together).
 *
 * Indexing is on no request's path: it trails the journal by up to
 * INDEX_INTERVAL_MS, so it writes fewer, larger batches, and a reader that
 * needs every acknowledged record waits for it (`indexed()`, `caughtUp()`).
 */

const META_KEY = 'meta/ledger'
/** Journal blocks indexed in one Hyperbee batch at most. */
const MAX_BLOCKS_PER_INDEX = 1024
/** How long the index may trail the journal while nobody reads it. */
const INDEX_INTERVAL_MS = 100
/** After a failed index write: first retry, doubling up to the max. */
const INDEX_RETRY_MIN_MS = 500
const INDEX_RETRY_MAX_MS = 30_000

export interface UsageIndexOptions {
  logger: Logger
  /** Shared with the month reads: an index write and a month read each see the other whole. */
  serial: Serial
  /** Blocks below `indexed` are in the index: the journal may drop the segments that hold only those. */
  release: (indexed: number) => Promise<void>
  /** Records whose batch was just written, in journal order. */
  onIndexed: (records: UsageRecord[]) => void
}

/** A user's open `usage/` group while a batch is built: its key, its first block's time, its records. */
interface RecordGroup {
  key: string
  ts: number
  records: StoredRecord[]
}

export class UsageIndex {
  private readonly log: Logger
  private readonly serial: Serial
  private readonly release: (indexed: number) => Promise<void>
  private readonly onIndexed: (records: UsageRecord[]) => void
  private bee: Hyperbee | null = null
  /** Journal blocks written so far: the index is behind while `indexedLength` is below. */
  private appended = 0
  /** Journal blocks written into the Hyperbee so far. */
  private indexedLength = 0
  /** Records in the blocks the index holds. */
  private indexedRecordCount = 0
  /** Journal blocks handed in and not indexed yet. */
  private readonly unindexed = new Map<number, JournalBlock>()
  private indexing: Promise<void> | null = null
  private indexTimer: NodeJS.Timeout | null = null
  private indexError: unknown = null
  private indexRetryMs = INDEX_RETRY_MIN_MS
  /** Committed counter values by counter key, as far as read or written. */
  private readonly counters = new Map<string, UsageCounter>()
  private countersDay = ''

  constructor(opts: UsageIndexOptions) {
    const { logger, serial, release, onIndexed } = opts
    this.log = logger
    this.serial = serial
    this.release = release
    this.onIndexed = onIndexed
  }

  /** Reads how far the index got (`length`, `records`); it writes to and is read from `bee` until `close()`. */
  async open(bee: Hyperbee): Promise<void> {
    this.bee = bee
    const meta = (await bee.get<LedgerMeta>(META_KEY))?.value
    this.indexedLength = meta?.journalLength ?? 0
    this.indexedRecordCount = meta?.records ?? 0
  }

  /** Journal blocks the index holds: the journal is read back from here at open. */
  get length(): number {
    return this.indexedLength
  }

  /** Journal blocks written and not yet indexed. */
  get lag(): number {
    return Math.max(0, this.appended - this.indexedLength)
  }

  /** Records in the blocks the index holds. */
  get records(): number {
    return this.indexedRecordCount
  }

  /** At open: the journal's blocks the index lacks (from `length` on), and where the journal ends. */
  resume(replay: Array<JournalEntry<JournalBlock>>, journalLength: number): void {
    for (const { n, block } of replay) this.unindexed.set(n, block)
    this.appended = journalLength
  }

  /** Block `n`, just written to the journal; indexed soon, or at once when a reader waits for it. */
  add(n: number, block: JournalBlock): void {
    // The index takes it from here rather than reading it back from the journal.
    this.unindexed.set(n, block)
    this.appended = n + 1
    this.indexLater()
  }

  /** Stops indexing (a failed write's retry included) and lets go of the bee. */
  close(): void {
    if (this.indexTimer) clearTimeout(this.indexTimer)
    this.indexTimer = null
    this.bee = null
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

  /**
   * The bee, once it holds every journal block written so far: what readers read.
   * @throws ERR_INTERNAL when indexing failed, ERR_UNAVAILABLE when the ledger is closed
   */
  async caughtUp(): Promise<Hyperbee> {
    await this.indexed()
    if (!this.bee) throw new MeshError('ERR_UNAVAILABLE', 'ledger is closed')
    return this.bee
  }

  /** One batch per INDEX_INTERVAL_MS at most: larger batches cost less per record than one per block. */
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
    if (!this.bee) return
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

  /** Writes waiting journal blocks into the Hyperbee, in one batch. */
  private async indexJournal(): Promise<void> {
    const bee = this.bee
    if (!bee) return
    const from = this.indexedLength
    const to = Math.min(this.appended, from + MAX_BLOCKS_PER_INDEX)
    if (to <= from) return
    let batch: ReturnType<Hyperbee['batch']> | null = null
    let written: { touched: Map<string, UsageCounter>; records: UsageRecord[] }
    try {
      // bee.batch() itself throws on a closed or failed bee: that is an index failure like any other.
      batch = bee.batch()
      written = await this.writeBlocks(batch, from, to)
    } catch (err) {
      await batch?.close().catch(() => {})
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
    this.indexedRecordCount += written.records.length
    this.indexError = null
    this.indexRetryMs = INDEX_RETRY_MIN_MS
    for (let n = from; n < to; n++) this.unindexed.delete(n)
    await this.release(to).catch((err) => this.log.warn({ err }, 'old journal segments not removed'))
    // Only today's counters are worth keeping: earlier days are read from the bee if ever needed.
    const today = utcDay(Date.now())
    if (today !== this.countersDay) {
      this.counters.clear()
      this.countersDay = today
    }
    for (const [key, c] of written.touched) this.counters.set(key, c)
    this.onIndexed(written.records)
  }

  /**
   * Puts blocks `from`..`to` - 1 into `batch` (records, counters, `meta/ledger`) and flushes it;
   * returns the counters it wrote and the records it indexed.
   */
  private async writeBlocks(
    batch: Batch,
    from: number,
    to: number,
  ): Promise<{ touched: Map<string, UsageCounter>; records: UsageRecord[] }> {
    const touched = new Map<string, UsageCounter>()
    const indexedRecords: UsageRecord[] = []
    const groups = new Map<string, RecordGroup>()
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
    return { touched, records: indexedRecords }
  }

  private async committedCounter(key: string, batch: Batch): Promise<UsageCounter> {
    const cached = this.counters.get(key)
    if (cached) return cached
    const entry = await batch.get<UsageCounter>(key)
    return entry?.value ?? emptyCounter()
  }
}
