import type { Identity } from '../../facilities/auth/auth.facility.js'
import type { LimitsFacility, Subject } from '../../facilities/limits.facility.js'
import type { UsageFacility } from '../../facilities/usage/usage.facility.js'
import { MeshError } from '../../kernel/errors.js'
import { idSequence } from '../../kernel/util.js'
import type { Spent } from './choices.js'

/** What a served request reports for its usage record. */
export interface Metered {
  processor?: string | undefined
  doneReason?: string | undefined
}

/**
 * The accounting frame of every served request (RPC or HTTP, infer or embed):
 * admission against the limits, the work, its tokens added to the limits, and
 * its usage record, durable before the request returns.
 */
export class Metering {
  /** Request ids: random per start, then a counter (unique across restarts, no syscall per request). */
  private readonly nextRequestId = idSequence(6, 6)
  /** Requests admitted and not yet handed to the ledger. */
  private unrecorded = 0

  constructor(
    private readonly ledger: () => UsageFacility,
    private readonly limiter: () => LimitsFacility,
    private readonly subjectOf: (identity: Identity) => Subject,
  ) {}

  /** True when no other request can be recorded in this turn: the ledger need not wait for one. */
  quiet(): boolean {
    return this.unrecorded <= 1
  }

  /**
   * Runs `work` for `identity` within its limits and records it: with the tokens of its
   * result, or when it fails, those `spent` says ran (what the processors its deadline, or a
   * failed choice, stopped had generated).
   * @throws ERR_RATE_LIMITED, ERR_QUOTA_EXCEEDED (not admitted), whatever `work` throws (after
   *         recording it), ERR_INTERNAL when the record cannot be written
   */
  async run<T extends { promptTokens: number; completionTokens?: number }>(
    identity: Identity,
    model: string,
    work: () => Promise<T>,
    counts: (result: T) => Metered,
    /** The record's id (unique: one the gateway made); a new one when absent. */
    id?: string,
    spent?: Spent,
  ): Promise<T & { requestId: string }> {
    const usage = this.ledger()
    const limits = this.limiter()
    const subject = this.subjectOf(identity)
    if (!usage.hasTotals(identity.userId)) await usage.loadTotals(identity.userId)
    limits.admit(subject)
    const started = performance.now()
    const requestId = id ?? this.nextRequestId()
    let result: T | null = null
    let failure: MeshError | null = null
    let recorded: Promise<void>
    this.unrecorded++
    try {
      try {
        result = await work()
      } catch (err) {
        failure = MeshError.from(err)
      }
      const promptTokens = result ? result.promptTokens : (spent?.promptTokens ?? 0)
      const completionTokens = result ? (result.completionTokens ?? 0) : (spent?.completionTokens ?? 0)
      const meta = result ? counts(result) : {}
      limits.addTokens(subject, promptTokens + completionTokens)
      recorded = usage.record({
        id: requestId,
        ts: Date.now(),
        userId: identity.userId,
        keyId: identity.keyId,
        model,
        processor: meta.processor ?? null,
        promptTokens,
        completionTokens,
        ms: Math.round((performance.now() - started) * 1000) / 1000,
        status: statusOf(failure, meta),
        ...(failure ? { code: failure.code } : {}),
      })
    } finally {
      this.unrecorded--
    }
    await recorded
    if (failure) throw failure
    return Object.assign(result as T, { requestId })
  }
}

function statusOf(failure: MeshError | null, meta: Metered): 'ok' | 'error' | 'cancelled' {
  if (failure) return failure.code === 'ERR_CANCELLED' ? 'cancelled' : 'error'
  return meta.doneReason === 'cancelled' ? 'cancelled' : 'ok'
}
