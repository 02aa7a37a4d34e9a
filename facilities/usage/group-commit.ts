import type { UsageRecord } from '../../kernel/accounts.js'
import { MeshError } from '../../kernel/errors.js'
import { errorMessage } from '../../kernel/util.js'
import type { Logger } from '../log.facility.js'
import type { Journal } from './journal.js'
import type { JournalBlock } from './ledger-layout.js'

/**
 * The ledger's write path: `add()` resolves once its record is in the journal.
 * The records of one turn of the event loop share one journal block, and every
 * record that arrives while a block is being appended goes into the next one
 * (group commit): under load, many answers wait for one write rather than one
 * write each.
 *
 * Waiting for the turn's end puts the rest of the turn's I/O (the RPC
 * acknowledgement of the processor's reply among it) ahead of the answer. When
 * the caller says it is quiet (nothing else in flight, so nothing could join),
 * the block is written at once instead: `writeAtOnceWhenQuiet`, measured in
 * docs/benchmarks.md ("One request at a time").
 */

interface Pending {
  record: UsageRecord
  resolve: () => void
  reject: (err: unknown) => void
}

export interface GroupCommitOptions {
  /** Open; written to only by this group commit. */
  journal: Journal<JournalBlock>
  logger: Logger
  /** Records in one block at most; the rest go into the next. */
  maxBatch: number
  /** True when no other record can come in this turn (the caller has nothing else in flight). */
  quiet: () => boolean
  /** Block `n` is in the journal, its write took `ms`; its records are acknowledged right after. */
  onCommitted: (n: number, block: JournalBlock, ms: number) => void
  /** A block could not be written; its records are rejected right after. */
  onFailed: (records: UsageRecord[]) => void
}

export class GroupCommit {
  private readonly journal: Journal<JournalBlock>
  private readonly log: Logger
  private readonly maxBatch: number
  private readonly quiet: () => boolean
  private readonly onCommitted: (n: number, block: JournalBlock, ms: number) => void
  private readonly onFailed: (records: UsageRecord[]) => void
  private readonly queue: Pending[] = []
  private draining: Promise<void> | null = null

  constructor(opts: GroupCommitOptions) {
    const { journal, logger, maxBatch, quiet, onCommitted, onFailed } = opts
    this.journal = journal
    this.log = logger
    this.maxBatch = maxBatch
    this.quiet = quiet
    this.onCommitted = onCommitted
    this.onFailed = onFailed
  }

  /**
   * Queues a record for the next block; resolves once that block is written.
   * @throws ERR_INTERNAL when the write failed
   */
  add(record: UsageRecord): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ record, resolve, reject })
      this.draining ??= this.drain(this.writeAtOnceWhenQuiet())
    })
  }

  /** Resolves once every record added so far is written or rejected. */
  async flushed(): Promise<void> {
    await this.draining
  }

  /** Whether the first block goes at once (the caller is quiet) or gathers the turn's records. */
  private writeAtOnceWhenQuiet(): boolean {
    return this.quiet()
  }

  private async drain(atOnce: boolean): Promise<void> {
    // Let the records of this turn of the event loop join the first block; at once, only those
    // of this microtask checkpoint (still ahead of the turn's I/O). Either way this yields before
    // the drain can end, so add() has set `draining` by the time the drain clears it.
    await (atOnce ? Promise.resolve() : new Promise<void>((resolve) => setImmediate(resolve)))
    // `draining` is cleared in the same microtask as the queue's last check: a record added in
    // between would otherwise wait for a drain that has already ended.
    try {
      while (this.queue.length > 0) {
        const group = this.queue.splice(0, this.maxBatch)
        const records = group.map((p) => p.record)
        try {
          const block: JournalBlock = { ts: Date.now(), records }
          const started = performance.now()
          const n = await this.journal.append(block)
          this.onCommitted(n, block, performance.now() - started)
          for (const p of group) p.resolve()
        } catch (err) {
          this.onFailed(records)
          this.log.error({ err, records: group.length }, 'ledger write failed')
          const e = MeshError.internal(`usage could not be recorded: ${errorMessage(err)}`, err)
          for (const p of group) p.reject(e)
        }
      }
    } finally {
      this.draining = null
    }
  }
}
