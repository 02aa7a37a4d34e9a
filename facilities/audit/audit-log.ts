import type Hyperbee from 'hyperbee'
import {
  type AuditAction,
  type AuditDetails,
  type AuditEntry,
  type AuditPage,
  actionMatches,
  type ParsedAuditQuery,
} from '../../kernel/audit.js'
import { type ErrorCode, MeshError } from '../../kernel/errors.js'
import { INVITE_PREFIX } from '../../kernel/invite.js'
import { errorMessage } from '../../kernel/util.js'
import { API_KEY_PREFIX, REFRESH_PREFIX } from '../auth/auth.facility.js'
import { Facility } from '../facility.js'
import type { Logger } from '../log.facility.js'
import type { StoreFacility } from '../store.facility.js'
import { type FailedAction, FailureDigest } from './failure-digest.js'

/**
 * The audit log (docs/operations.md "Audit log", docs/data-model.md): admin and security
 * events, appended to the gateway's Hyperbee `audit` as `audit/<13-digit ms>-<6-digit seq>`, so
 * keys sort by time and a `since` is a range read. Append-only: nothing here deletes or rewrites.
 *
 * Writes are group-committed: the entries handed in while a batch is being written go in the
 * next batch, one atomic Hyperbee flush for all of them, batches one after another. So
 * concurrent appends are neither lost nor interleaved (each gets a distinct, increasing key from
 * this one writer), and a burst costs one flush, not one each.
 *
 * `record` (an admin action that happened) resolves once its entry is flushed: the caller
 * awaits it before it replies, so an acknowledged admin action has its entry on disk (an
 * acknowledged Hyperbee flush survives kill -9). That costs the action one flush (~0.4 ms,
 * shared with whatever else is in the batch); admin actions are rare and a missing entry for
 * one is exactly what an audit log must not have. `failure` (a refused login, a forbidden call:
 * what an attacker can send in floods) is not awaited and goes through a FailureDigest: at most
 * a bounded number of entries per window, whatever the flood.
 */

export const AUDIT_BEE = 'audit'
const PREFIX = 'audit/'
const END = 'audit0'
/** Largest `details` of an entry, as JSON. */
export const MAX_DETAILS_BYTES = 1024
/** Entries queued for the next batch past which further failures are dropped (counted) rather than kept in memory. */
const MAX_QUEUED = 10_000
/** Longest actor, target or request id. */
const MAX_ID = 128

/** A credential in full: an API key, a refresh token, an invite token, a JWT. */
const CREDENTIAL_RE = new RegExp(
  [
    `\\b${API_KEY_PREFIX}_[0-9a-f]{16}_[A-Za-z0-9_-]{16,}`,
    `\\b${REFRESH_PREFIX}_[0-9a-f]{16}_[A-Za-z0-9_-]{16,}`,
    `${INVITE_PREFIX.replace('.', '\\.')}[A-Za-z0-9_-]{16,}`,
    'eyJ[A-Za-z0-9_-]{8,}\\.eyJ',
  ].join('|'),
)

/** What a caller hands to `record`. */
export interface AuditRecord {
  action: AuditAction
  actor: string
  target?: string | null
  outcome?: 'ok' | ErrorCode
  requestId?: string
  details?: AuditDetails
}

/** Who can record an entry: the log itself, or the gateway's GatewayAudit (which never throws). */
export interface AuditRecorder {
  record(r: AuditRecord): Promise<unknown>
}

export interface AuditLogOptions {
  store: StoreFacility
  logger: Logger
  /** How long failures of one group are counted before their summary is written. */
  failureWindowMs: number
}

type Stored = Omit<AuditEntry, 'id'>

interface Batch {
  entries: Array<{ key: string; value: Stored }>
  written: Promise<void>
}

const pad = (n: number, width: number) => String(n).padStart(width, '0')
const keyAt = (ms: number) => `${PREFIX}${pad(ms, 13)}`

export class AuditLog extends Facility {
  readonly name = 'audit'
  private readonly opts: AuditLogOptions
  private bee: Hyperbee | null = null
  /** Time and sequence of the newest key handed out: keys only grow, even if the clock steps back. */
  private last = { at: 0, seq: -1 }
  private collecting: Batch | null = null
  private tail: Promise<void> = Promise.resolve()
  private readonly digest: FailureDigest
  private sweepTimer: NodeJS.Timeout | null = null
  private dropped = 0

  constructor(opts: AuditLogOptions) {
    super()
    this.opts = opts
    this.digest = new FailureDigest(opts.failureWindowMs, (f) => this.writeFailure(f))
  }

  protected override async _open(): Promise<void> {
    const bee = await this.opts.store.bee(AUDIT_BEE)
    for await (const { key } of bee.createReadStream({ gte: PREFIX, lt: END, reverse: true, limit: 1 })) {
      const [at, seq] = key.slice(PREFIX.length).split('-').map(Number)
      this.last = { at: at ?? 0, seq: seq ?? 0 }
    }
    this.bee = bee
    const every = Math.max(50, Math.min(this.opts.failureWindowMs / 4, 5_000))
    this.sweepTimer = setInterval(() => this.digest.close(), every)
    this.sweepTimer.unref()
  }

  protected override async _close(): Promise<void> {
    if (this.sweepTimer) clearInterval(this.sweepTimer)
    this.sweepTimer = null
    this.digest.close(Date.now(), true)
    await this.tail
    this.bee = null
  }

  private get db(): Hyperbee {
    if (!this.bee) throw new MeshError('ERR_UNAVAILABLE', 'the audit log is closed')
    return this.bee
  }

  /**
   * Appends an entry and resolves once it is durable.
   * @throws ERR_BAD_REQUEST (details too large, or holding what looks like a credential),
   *   ERR_UNAVAILABLE (closed), and the store's write errors
   */
  async record(r: AuditRecord): Promise<AuditEntry> {
    const entry = this.entry(r)
    await this.enqueue(entry)
    return entry
  }

  /**
   * A failed action, for the log but not worth waiting for: counted by the digest (see
   * FailureDigest), its entries written with the next batch. Never throws.
   */
  failure(f: FailedAction): void {
    if (!this.bee) return
    this.digest.add(f)
  }

  /** Queues a failure's entry; its time, or null when it was dropped or refused. */
  private writeFailure(f: FailedAction): number | null {
    if (!this.bee) return null
    if (this.collecting && this.collecting.entries.length >= MAX_QUEUED) {
      if (this.dropped++ === 0) this.opts.logger.warn('audit: the store is not keeping up; failures dropped')
      return null
    }
    const { peer, details, ...rest } = f
    const r: AuditRecord = {
      ...rest,
      ...(peer || details ? { details: { ...details, ...(peer ? { peer } : {}) } } : {}),
    }
    const lost = (err: unknown) =>
      this.opts.logger.error({ err: errorMessage(err), action: f.action }, 'audit: an entry was not written')
    // Called from the digest's timer too: nothing may escape.
    try {
      const entry = this.entry(r)
      this.enqueue(entry).catch(lost)
      return entry.at
    } catch (err) {
      lost(err)
      return null
    }
  }

  /** A checked entry with the next key. @throws ERR_BAD_REQUEST */
  private entry(r: AuditRecord): AuditEntry {
    const details = r.details && Object.keys(r.details).length ? r.details : undefined
    for (const [field, v] of [
      ['actor', r.actor],
      ['target', r.target],
      ['requestId', r.requestId],
    ])
      if (typeof v === 'string' && v.length > MAX_ID)
        throw MeshError.badRequest(`audit ${field} over ${MAX_ID} characters`)
    const text = JSON.stringify([r.actor, r.target, r.requestId, details])
    if (details && JSON.stringify(details).length > MAX_DETAILS_BYTES)
      throw MeshError.badRequest(`audit details over ${MAX_DETAILS_BYTES} bytes`)
    if (CREDENTIAL_RE.test(text)) throw MeshError.badRequest('an audit entry may not hold a credential')
    const now = Math.max(Date.now(), this.last.at)
    this.last = now === this.last.at ? { at: now, seq: this.last.seq + 1 } : { at: now, seq: 0 }
    return {
      id: `${pad(this.last.at, 13)}-${pad(this.last.seq, 6)}`,
      at: now,
      action: r.action,
      actor: r.actor,
      target: r.target ?? null,
      outcome: r.outcome ?? 'ok',
      ...(r.requestId ? { requestId: r.requestId } : {}),
      ...(details ? { details } : {}),
    }
  }

  /** Adds the entry to the batch being collected; resolves when that batch is flushed. */
  private enqueue(entry: AuditEntry): Promise<void> {
    const db = this.db
    if (!this.collecting) {
      const batch: Batch = { entries: [], written: Promise.resolve() }
      batch.written = this.tail.then(() => {
        if (this.collecting === batch) this.collecting = null
        return this.write(db, batch)
      })
      this.tail = batch.written.catch(() => {})
      this.collecting = batch
    }
    const { id, ...value } = entry
    this.collecting.entries.push({ key: `${PREFIX}${id}`, value })
    return this.collecting.written
  }

  private async write(db: Hyperbee, batch: Batch): Promise<void> {
    const b = db.batch()
    for (const { key, value } of batch.entries) await b.put(key, value)
    await b.flush()
    if (this.dropped > 0) {
      this.opts.logger.warn({ dropped: this.dropped }, 'audit: failures were dropped while the store lagged')
      this.dropped = 0
    }
  }

  /** The newest `limit` entries in [since, until) of the action (prefix), oldest first. */
  async read(q: ParsedAuditQuery): Promise<AuditPage> {
    const range = {
      gte: q.since !== undefined ? keyAt(q.since) : PREFIX,
      lt: q.until !== undefined ? keyAt(q.until) : END,
      reverse: true,
    }
    const entries: AuditEntry[] = []
    let more = false
    for await (const { key, value } of this.db.createReadStream<Stored>(range)) {
      if (q.action && !actionMatches(value.action, q.action)) continue
      if (entries.length === q.limit) {
        more = true
        break
      }
      entries.push({ id: key.slice(PREFIX.length), ...value })
    }
    return { entries: entries.reverse(), more }
  }
}
