import type { UsageRecord } from '../../kernel/accounts.js'
import { MeshError } from '../../kernel/errors.js'
import type { Logger } from '../log.facility.js'
import type { Journal } from './journal.js'
import type { JournalBlock } from './ledger-layout.js'

/**
 * The ledger's write path: `add()` resolves once its record is in the journal.
 * The records of one turn of the event loop share one journal block, and every
 * record that arrives while a block is being appended goes into the next one
 * (group commit): under load, many answers wait for one write rather than one
 * write each.
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
  /** Block `n` is in the journal; its records are acknowledged right after. */
  onCommitted: (n: number, block: JournalBlock) => void
  /** A block could not be written; its records are rejected right after. */
  onFailed: (records: UsageRecord[]) => void
}

export class GroupCommit {
  private readonly journal: Journal<JournalBlock>
  private readonly log: Logger
  private readonly maxBatch: number
  private readonly onCommitted: (n: number, block: JournalBlock) => void
  private readonly onFailed: (records: UsageRecord[]) => void
  private readonly queue: Pending[] = []
  private draining: Promise<void> | null = null

  constructor(opts: GroupCommitOptions) {
    const { journal, logger, maxBatch, onCommitted, onFailed } = opts
    this.journal = journal
    this.log = logger
    this.maxBatch = maxBatch
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
      this.draining ??= this.drain()
    })
  }

  /** Resolves once every record added so far is written or rejected. */
  async flushed(): Promise<void> {
    await this.draining
  }

  private async drain(): Promise<void> {
    // Let the records of this turn of the event loop join the first block. This yields before
    // the drain can end, so add() has set `draining` by the time the drain clears it.
    await new Promise<void>((resolve) => setImmediate(resolve))
    while (this.queue.length > 0) {
      const group = this.queue.splice(0, this.maxBatch)
      const records = group.map((p) => p.record)
      try {
        const block: JournalBlock = { ts: Date.now(), records }
        const n = await this.journal.append(block)
        this.onCommitted(n, block)
        for (const p of group) p.resolve()
      } catch (err) {
        this.onFailed(records)
        this.log.error({ err, records: group.length }, 'ledger write failed')
        const e = MeshError.internal(`usage could not be recorded: ${(err as Error).message}`, err)
        for (const p of group) p.reject(e)
      }
    }
    this.draining = null
  }
}
