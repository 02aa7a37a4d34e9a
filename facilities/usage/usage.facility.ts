import { join } from 'node:path'
import type { UsageRecord, UsageSummary } from '../../kernel/accounts.js'
import { MeshError } from '../../kernel/errors.js'
import { Facility } from '../facility.js'
import { Serial } from '../lib/serial.js'
import type { Logger } from '../log.facility.js'
import type { StoreFacility } from '../store.facility.js'
import { GroupCommit } from './group-commit.js'
import { Journal } from './journal.js'
import { type JournalBlock, sumRows, utcDay, utcMonth } from './ledger-layout.js'
import { MonthTotals } from './month-totals.js'
import { UsageIndex } from './usage-index.js'
import { readRecords, readSummary } from './usage-reads.js'

// Part of the ledger's API (the gateway's usage reports use them); they live with the layout.
export { sumRows, utcDay, utcMonth }

/**
 * The usage ledger: a journal (segment files in `<store>/usage-journal/`) in
 * front of an index (Hyperbee `usage`). This facility wires its parts, a file
 * each:
 *
 *   group-commit.ts   `record()` resolves once its record is in the journal; the records of one
 *                     turn of the event loop share one journal block (group commit)
 *   journal.ts        the segment files: checked frames, cut back after a torn write, read back at open
 *   usage-index.ts    writes journal blocks into the Hyperbee in batches, off the request path,
 *                     and resumes where it stopped after a crash
 *   month-totals.ts   tokens per user today and this month, pending records included, for quotas
 *   usage-reads.ts    `summary()` and `records()`, once the index has caught up
 *   ledger-layout.ts  what is stored:
 *
 *   journal block n                                { ts, records: UsageRecord[] }   (one group commit)
 *   usage/<userId>/<group ISO time>/<n + 1>        { records: UsageRecord[] }       (that user's records of blocks n…, see RECORD_GROUP_*)
 *   counters/<userId>/<YYYY-MM-DD>/<model>         { requests, errors, promptTokens, completionTokens }
 *   meta/ledger                                    { commits, records, journalLength }
 *
 * Why a journal: a Hyperbee batch costs the same however small (tree reads on
 * every put, then the flush), and a Hypercore append hashes, signs and writes
 * RocksDB on the gateway's thread; making every answer wait for either held
 * the gateway's throughput down (docs/benchmarks.md). Appending to a file is
 * cheap and survives the process being killed just as well. Hyperbee stays the
 * ledger's store and query index, and readers wait for the index to catch up
 * first, so they see every record that has been acknowledged.
 */

export const USAGE_BEE = 'usage'
/** Folder of the journal's segment files, inside the store folder. */
export const USAGE_JOURNAL = 'usage-journal'
export const DEFAULT_MAX_BATCH = 4096

const never = (): boolean => false

export interface UsageFacilityOptions {
  store: StoreFacility
  logger: Logger
  maxBatch?: number
  /**
   * Asked when a record arrives and no block is pending: true when the caller
   * knows no other record can join this turn (nothing else in flight), so the
   * block is written at once rather than at the turn's end (see GroupCommit).
   */
  quiet?: () => boolean
  /** Told how long each journal block's write took, in seconds. */
  onCommit?: (seconds: number) => void
}

export class UsageFacility extends Facility {
  readonly name = 'usage'
  private readonly storeFacility: StoreFacility
  private readonly log: Logger
  private readonly maxBatch: number
  private readonly quiet: () => boolean
  private readonly onCommit: ((seconds: number) => void) | undefined
  private journal: Journal<JournalBlock> | null = null
  /** Writes records to `journal`, from open to close. */
  private commits: GroupCommit | null = null
  private recordCount = 0
  /** Index writes and month reads run one at a time: each sees the other whole. */
  private readonly serial = new Serial()
  private readonly totals = new MonthTotals(this.serial)
  private readonly index: UsageIndex

  constructor(opts: UsageFacilityOptions) {
    super()
    const { store, logger, maxBatch = DEFAULT_MAX_BATCH, quiet = never } = opts
    this.storeFacility = store
    this.log = logger
    this.maxBatch = maxBatch
    this.quiet = quiet
    this.onCommit = opts.onCommit
    this.index = new UsageIndex({
      logger,
      serial: this.serial,
      release: (indexed) => this.journal?.release(indexed) ?? Promise.resolve(),
      onIndexed: (records) => this.totals.indexed(records),
    })
  }

  protected override async _open(): Promise<void> {
    const bee = await this.storeFacility.bee(USAGE_BEE)
    this.totals.open(bee)
    await this.index.open(bee)
    this.recordCount = this.index.records
    const journal = new Journal<JournalBlock>(join(this.storeFacility.dir, USAGE_JOURNAL))
    // Acknowledged before a stop or crash but not yet in the index: count them, then index them.
    const replay = await journal.open(this.index.length)
    this.journal = journal
    this.commits = new GroupCommit({
      journal,
      logger: this.log,
      maxBatch: this.maxBatch,
      quiet: this.quiet,
      onCommitted: (n, block, ms) => {
        this.onCommit?.(ms / 1000)
        this.index.add(n, block)
        this.recordCount += block.records.length
      },
      onFailed: (records) => {
        for (const r of records) this.totals.addPending(r, -1)
      },
    })
    this.index.resume(replay, journal.length)
    for (const { block } of replay) {
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
    await this.commits?.flushed()
    await this.indexed().catch(() => {})
    await this.serial.idle()
    this.index.close()
    await this.journal?.close()
    this.totals.close()
    this.journal = null
    this.commits = null
  }

  /** Journal blocks written and not yet in the Hyperbee index. */
  get indexLag(): number {
    return this.index.lag
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
    if (!this.commits || this.closing)
      return Promise.reject(new MeshError('ERR_UNAVAILABLE', 'ledger is closed'))
    this.totals.addPending(record, 1)
    return this.commits.add(record)
  }

  /**
   * Resolves once every journal block written so far is in the index.
   * @throws ERR_INTERNAL when indexing failed (the journal still has the records)
   */
  indexed(): Promise<void> {
    return this.index.indexed()
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
    return readSummary(() => this.index.caughtUp(), userId, from, to, model)
  }

  /** One user's records made from `fromTs` to `toTs` (ms, their `ts`, both included), oldest first, at most `limit`. */
  records(userId: string, fromTs: number, toTs: number, limit = 1000): Promise<UsageRecord[]> {
    return readRecords(() => this.index.caughtUp(), userId, fromTs, toTs, limit)
  }
}
