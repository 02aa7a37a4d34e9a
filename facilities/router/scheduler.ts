import { type CancelToken, cancelError } from '../../kernel/cancel.js'
import { MeshError } from '../../kernel/errors.js'
import { baseModel } from '../../kernel/inference.js'
import { ewma } from '../../kernel/util.js'
import { type Breakers, isProcessorFault, RETRYABLE } from './breaker.js'
import type { Discovery } from './discovery.js'
import { FairQueue, type Waiter } from './fair-queue.js'
import { isLoaded, type ProcessorEntry, serves } from './processor-entry.js'
import type { Registry, RoutingConfig } from './registry.js'
import { type Candidate, choose, DEFAULT_EXPECTED_TOKENS, type StrategyState } from './strategies.js'
import { DEFAULT_COLD_LOAD_MS, warmCandidates } from './warmth.js'

/** What a successful answer tells the router about its processor's speed. */
export interface AnswerStats {
  ttftMs?: number
  completionTokens?: number
  evalMs?: number
}

/** How a failed try ends: the error to give (or to retry past), and whether another try may help. */
export interface Verdict {
  error: MeshError
  /** The processor, not the request, failed: another processor may answer. */
  retry: boolean
  /** Stopped for its processor's sake (it drains, restarted, is unreachable or gone): it may take the request again once back. */
  rerouted: boolean
}

/** A slot on one processor, held until one outcome is reported (later reports do nothing). */
export interface Lease {
  readonly entry: ProcessorEntry
  /** The processor answered: frees the slot, closes its breaker, learns its speed. */
  answered(stats?: AnswerStats): void
  /**
   * The try failed with `err` after `chunks` streamed pieces: frees the slot, counts a
   * processor fault on its breaker, marks a processor that refused as draining, and says
   * whether to try again. A retryable failure after chunks is ERR_STREAM_BROKEN, not retried.
   */
  failed(err: unknown, chunks?: number): Verdict
  /** The caller stopped the request; `hung`: the processor had produced nothing by the deadline (a fault). */
  stopped(hung: boolean): void
}

export interface LeaseOptions {
  userId?: string
  /** Processors this request already failed on. */
  exclude?: ReadonlySet<string>
  /**
   * Processors to pass over while another one is free: those the request's sibling choices
   * (`n` > 1) run on. A preference, never a refusal: with only these free, one of them is
   * taken. The processor picked is added to it.
   */
  avoid?: Set<string> | undefined
  cancel?: CancelToken
}

const NONE: ReadonlySet<string> = new Set()

/**
 * Picks processors for requests: among those that serve the model, have a free slot
 * (this gateway runs at most `capacity` requests on each) and whose breaker lets it
 * through, the configured strategy chooses. When every such processor is full the
 * request waits in the fair queue (bounded: past it, ERR_BUSY with a retry hint).
 */
export class Scheduler {
  private readonly routing: RoutingConfig
  private readonly registry: Registry
  private readonly breakers: Breakers
  private readonly discovery: Discovery
  private readonly onQueueWait: ((seconds: number) => void) | undefined
  readonly queue: FairQueue<Lease>
  private readonly strategyState: StrategyState = { turn: 0, cursor: new Map(), random: Math.random }
  private expectedTokens = DEFAULT_EXPECTED_TOKENS
  /** EWMA of how long a lease is held, for the ERR_BUSY retry hint. */
  private serviceMs = 1000
  private pumpNow = 0
  /** The pump's one function, made once: the head of a queue gets a lease, or fails. */
  private readonly take = (w: Waiter<Lease>): Lease | null => {
    const lease = this.tryLease(w.model, w.exclude, this.pumpNow, w.userId, w.avoid, w.since)
    if (!lease) this.checkServable(w.model, w.exclude, this.pumpNow)
    return lease
  }

  constructor(opts: {
    routing: RoutingConfig
    registry: Registry
    breakers: Breakers
    discovery: Discovery
    onQueueWait?: (seconds: number) => void
  }) {
    this.routing = opts.routing
    this.registry = opts.registry
    this.breakers = opts.breakers
    this.discovery = opts.discovery
    this.onQueueWait = opts.onQueueWait
    this.queue = new FairQueue((model) => this.registry.servingSlotsFor(model))
  }

  /**
   * A slot for `model`: at once when one is free, else once one frees (queued, fairly across
   * users; a user holding their share while others wait queues behind them even if a slot is
   * free). A request cancelled before it gets a slot takes none. Report its one outcome on the lease.
   * @throws ERR_MODEL_NOT_FOUND (no processor ever served it), ERR_NO_PROCESSOR (none left, or
   *         every one's breaker is open), ERR_BUSY (queue full), or `cancel`'s reason
   */
  lease(model: string, opts: LeaseOptions = {}): Promise<Lease> {
    const { userId = '', exclude = NONE, avoid, cancel } = opts
    if (cancel?.aborted) return Promise.reject(cancelError(cancel.reason))
    const deferred = this.queue.overShare(userId, model)
    const lease = deferred ? null : this.tryLease(model, exclude, Date.now(), userId, avoid)
    if (lease) return Promise.resolve(lease)
    return this.wait(model, userId, exclude, avoid, cancel, deferred)
  }

  private async wait(
    model: string,
    userId: string,
    exclude: ReadonlySet<string>,
    avoid: Set<string> | undefined,
    cancel: CancelToken | undefined,
    deferred: boolean,
  ): Promise<Lease> {
    let now = Date.now()
    if (exclude.size === 0 && !this.registry.servesAny(model)) {
      // A processor may have joined since the last periodic lookup.
      await this.discovery.refreshIfStale()
      now = Date.now()
      const lease = this.tryLease(model, exclude, now, userId, avoid)
      if (lease) return lease
    }
    this.checkServable(model, exclude, now)
    this.checkRoom(model, userId)
    return new Promise<Lease>((settle, reject) => {
      const { onQueueWait } = this
      const queued = performance.now()
      const resolve = onQueueWait
        ? (lease: Lease) => {
            onQueueWait((performance.now() - queued) / 1000)
            settle(lease)
          }
        : settle
      const waiter: Waiter<Lease> = {
        model,
        userId,
        exclude,
        avoid,
        resolve,
        reject,
        unwatch: () => {},
        since: now,
      }
      if (cancel) {
        waiter.unwatch = cancel.onAbort((reason) => {
          if (this.queue.remove(waiter)) this.queue.settle(waiter, cancelError(reason))
        })
      }
      this.queue.push(waiter)
      // A free slot none of the others can take (another model's, an excluded processor's) is
      // still this request's: work-conserving.
      if (deferred) this.pump()
    })
  }

  /** @throws ERR_BUSY when the queue, or this user's part of it, is full */
  private checkRoom(model: string, userId: string): void {
    const { waiting } = this.queue
    if (waiting < this.routing.maxQueue && this.queue.waitingOf(userId) < this.routing.maxQueuePerUser) return
    const capacity = Math.max(1, this.registry.capacityFor(model))
    const retryAfterMs = Math.max(1000, Math.round(((waiting + 1) * this.serviceMs) / capacity))
    throw new MeshError(
      'ERR_BUSY',
      `every processor for '${model}' is busy and the queue is full; retry in ${Math.ceil(retryAfterMs / 1000)} s`,
      { model, queued: waiting, retryAfterMs },
    )
  }

  /** Throws when no processor could ever take the request (as opposed to: all are busy). */
  private checkServable(model: string, exclude: ReadonlySet<string>, now: number): void {
    const serving = this.registry.entriesFor(model)
    if (serving.length === 0) {
      if (this.registry.everServed(model) || exclude.size > 0) throw MeshError.noProcessor(model)
      throw MeshError.modelNotFound(model)
    }
    const usable = serving.filter((e) => !exclude.has(e.id))
    if (usable.length === 0) throw MeshError.noProcessor(model, 'every one failed for this request')
    // Draining and unreachable processors may come back (a restart): wait for them, unless all
    // that can take requests now refuse them with an open breaker.
    if (usable.every((e) => e.state === 'serving' && this.breakers.isOpen(e, now))) {
      const retryAfterMs = Math.min(...usable.map((e) => this.breakers.cooldownLeft(e, now)))
      throw MeshError.noProcessor(
        model,
        `every one is failing; circuit open for ${Math.ceil(retryAfterMs / 1000)} s`,
      )
    }
  }

  /**
   * A lease for `userId` on the processor the strategy picks among those free now that have the
   * model loaded (else cold ones, when loading beats waiting: warmth.ts), those not in `avoid`
   * when there are any; or null.
   */
  private tryLease(
    model: string,
    exclude: ReadonlySet<string>,
    now: number,
    userId: string,
    avoid?: Set<string>,
    since?: number,
  ): Lease | null {
    const free: ProcessorEntry[] = []
    let reportsLoaded = false
    for (const e of this.registry.values()) {
      if (e.state !== 'serving' || !serves(e, model) || exclude.has(e.id) || e.inflight >= e.capacity)
        continue
      if (!this.breakers.admits(e, now)) continue
      free.push(e)
      if (e.loaded !== null) reportsLoaded = true
    }
    if (free.length === 0) return null
    // Only processors that say what they have loaded can be cold: the rest skip the weighing.
    const warm = reportsLoaded ? this.warm(model, free, exclude, now, since) : free
    if (warm.length === 0) return null
    const picked = choose(
      this.routing.strategy,
      model,
      (avoid?.size ? preferred(warm, avoid) : warm) as Candidate[],
      this.strategyState,
      this.expectedTokens,
    ) as ProcessorEntry
    avoid?.add(picked.id)
    picked.inflight++
    this.queue.hold(model, userId, 1)
    this.breakers.leased(picked)
    return new SlotLease(this, picked, model, userId)
  }

  /** Of `free`, those to choose among (warmth.ts): loaded ones, else cold ones when loading beats waiting. */
  private warm(
    model: string,
    free: ProcessorEntry[],
    exclude: ReadonlySet<string>,
    now: number,
    since: number | undefined,
  ): ProcessorEntry[] {
    return warmCandidates({
      model,
      free,
      busyLoaded: () => this.busyLoaded(model, exclude, now),
      waiting: () => this.queue.waitingFor(model),
      serviceMs: this.serviceMs,
      coldLoadMs: this.routing.coldLoadMs ?? DEFAULT_COLD_LOAD_MS,
      waitedMs: since === undefined ? 0 : now - since,
    })
  }

  /** Processors with `model` loaded and no free slot, that could take it once one frees. */
  private busyLoaded(model: string, exclude: ReadonlySet<string>, now: number): ProcessorEntry[] {
    const busy: ProcessorEntry[] = []
    for (const e of this.registry.values()) {
      if (e.state !== 'serving' || !serves(e, model) || exclude.has(e.id) || e.inflight < e.capacity) continue
      if (isLoaded(e, model) && !this.breakers.isOpen(e, now)) busy.push(e)
    }
    return busy
  }

  /** Frees a lease's slot: the bookkeeping every outcome shares. */
  release(lease: SlotLease): void {
    lease.entry.inflight--
    this.queue.hold(lease.model, lease.userId, -1)
    this.serviceMs = ewma(this.serviceMs, Date.now() - lease.started) as number
  }

  answered(e: ProcessorEntry, stats: AnswerStats, model: string): void {
    e.served++
    // It answered, so it has the model loaded now (its next status says so too).
    e.loaded?.add(baseModel(model))
    this.breakers.succeeded(e)
    if (stats.ttftMs !== undefined && stats.ttftMs >= 0) e.ttftMs = ewma(e.ttftMs, stats.ttftMs)
    if (stats.completionTokens && stats.evalMs && stats.evalMs > 0) {
      e.tokensPerSecond = ewma(e.tokensPerSecond, (stats.completionTokens * 1000) / stats.evalMs)
    }
    if (stats.completionTokens !== undefined) {
      this.expectedTokens = ewma(this.expectedTokens, Math.max(1, stats.completionTokens)) as number
    }
    this.pump()
  }

  failed(e: ProcessorEntry, err: unknown, chunks: number): Verdict {
    const error = MeshError.from(err)
    const retry = RETRYABLE.has(error.code)
    const draining = error.details?.draining === true
    const rerouted = draining || error.details?.rerouted === true
    // A processor that refused work because it is stopping did nothing wrong, and gets nothing new.
    if (draining) this.discovery.markDraining(e)
    this.breakers.failed(e, isProcessorFault(error, rerouted))
    this.pump()
    if (retry && chunks > 0) {
      const broken = new MeshError(
        'ERR_STREAM_BROKEN',
        `processor failed after ${chunks} chunks: ${error.reason}`,
        { chunks },
      )
      return { error: broken, retry: false, rerouted }
    }
    return { error, retry, rerouted }
  }

  stopped(e: ProcessorEntry, hung: boolean): void {
    this.breakers.failed(e, hung)
    this.pump()
  }

  /** Hands free slots to waiting requests; fails waiters nobody can serve. */
  pump(): void {
    if (this.queue.waiting === 0) return
    this.pumpNow = Date.now()
    this.queue.pump(this.take)
  }
}

/** The processors of `free` not in `avoid`, or all of them when every one is. */
function preferred(free: ProcessorEntry[], avoid: ReadonlySet<string>): ProcessorEntry[] {
  const others = free.filter((e) => !avoid.has(e.id))
  return others.length > 0 ? others : free
}

/** The one object a request holds per slot: its outcome frees the slot exactly once. */
class SlotLease implements Lease {
  readonly started = Date.now()
  private done = false

  constructor(
    private readonly scheduler: Scheduler,
    readonly entry: ProcessorEntry,
    readonly model: string,
    readonly userId: string,
  ) {}

  private release(): boolean {
    if (this.done) return false
    this.done = true
    this.scheduler.release(this)
    return true
  }

  answered(stats: AnswerStats = {}): void {
    if (this.release()) this.scheduler.answered(this.entry, stats, this.model)
  }

  failed(err: unknown, chunks = 0): Verdict {
    if (this.release()) return this.scheduler.failed(this.entry, err, chunks)
    return { error: MeshError.from(err), retry: false, rerouted: false }
  }

  stopped(hung: boolean): void {
    if (this.release()) this.scheduler.stopped(this.entry, hung)
  }
}
