import type { Logger } from '../../facilities/log.facility.js'
import type { NetFacility } from '../../facilities/net/net.facility.js'
import { CANCEL_GRACE_MS } from '../../facilities/net/peer-connection.js'
import { deltaParts, type StreamChunk } from '../../facilities/net/streaming.js'
import type { ProcessorEntry, RouterFacility } from '../../facilities/router/router.facility.js'
import type { RequestTrace } from '../../facilities/tracing/request-trace.js'
import { CancelToken, cancelError } from '../../kernel/cancel.js'
import type { GatewayConfig } from '../../kernel/config.js'
import { MeshError } from '../../kernel/errors.js'
import type { InferRequest, InferResult, ProcessorReply } from '../../kernel/inference.js'
import type { EmbedResult, GenerationDelta } from '../../kernel/wire.js'
import { type ChoiceLeg, runChoices, type Spent, spend } from './choices.js'

/** Waits `ms`, or less if `cancel` fires first. */
function sleep(ms: number, cancel: CancelToken): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms)
    const stop = cancel.onAbort(done)
    function done() {
      clearTimeout(timer)
      stop()
      resolve()
    }
  })
}

/** Where a served request's text goes, and how its caller can stop it. */
export interface Sink {
  /** Key under which a `cancel` RPC finds it, or null. */
  runningKey: string | null
  /** Each piece of streamed text, in order (`index`: its choice, with `n` > 1); null for a request answered whole. */
  onText: ((text: string, index?: number) => void) | null
  /** Streamed reasoning, tool calls and log probabilities, in order with the text. */
  onDelta?: ((delta: GenerationDelta) => void) | undefined
  /** Cancels the request when its caller goes away; returns the function that stops watching. */
  watch: (cancel: CancelToken) => () => void
  /** Called each time the request is handed to a processor. */
  onDispatch?: () => void
  /** Called when a processor's whole answer came back, before it is accounted. */
  onAnswer?: () => void
  /** The request's trace (`tracing.enabled`): its id, logger and hop timing. */
  trace?: RequestTrace | undefined
}

/** An embedding answer as processors give it, with who served it. */
export interface EmbedReply extends EmbedResult {
  processor?: string
}

/** What every try of one request shares. */
interface Forwarding {
  userId: string
  timeoutMs: number
  /** Where the tokens of an answer that came back after the deadline go (billed with the error). */
  spent: Spent
}

/** One try of a request on one processor. */
interface Leg {
  cancel: CancelToken
  model: string
  /** Whether it has sent text back (a stream that broke then cannot move elsewhere). */
  answering: boolean
}

/**
 * The reason a leg is stopped for its processor's sake (it restarted, drains, is unreachable
 * or gone): the request tries again without counting that processor as failed for it.
 */
function processorGone(entry: ProcessorEntry, what: string): MeshError {
  return new MeshError('ERR_UNAVAILABLE', `processor ${entry.id.slice(0, 8)} ${what}`, { rerouted: true })
}

/**
 * The request's answer from a processor's reply: who served it, and with tracing on, the
 * processor's round trip and what it measured itself (the gateway sets the whole timing later).
 */
function answerOf(
  reply: ProcessorReply,
  processor: string,
  trace: RequestTrace | undefined,
  upstreamMs: number,
): InferResult {
  const result = reply as InferResult
  result.processor = processor
  if (trace) {
    trace.upstreamMs = upstreamMs
    trace.processor = reply.timing
  }
  // The processor's part only: the gateway's whole timing replaces it (tracing on) or it goes.
  if (reply.timing !== undefined) result.timing = undefined
  return result
}

/** Every field of either kind of request (a field added to the schema must be forwarded or named here). */
type FieldOf<T> = T extends unknown ? keyof T : never
type ForwardedField = Exclude<FieldOf<InferRequest>, 'id' | 'timeoutMs' | 'n'>

/**
 * The options choice `index` is sent: with a `seed`, choice i > 0 gets `seed + i`, so the `n`
 * choices differ (one seed makes a sampler give the same answer each time) and each stays
 * reproducible per (seed, index); the first choice, and a request of one, keep the seed.
 */
function optionsFor(options: InferRequest['options'], index: number | undefined): InferRequest['options'] {
  if (!index || options?.seed === undefined) return options
  return { ...options, seed: options.seed + index }
}

/**
 * What a processor is sent for `req` (choice `index`, see `optionsFor`): every field but the caller's stream id,
 * deadline and choice count (each processor makes one choice), as one literal of one shape for both kinds (fields a kind lacks
 * are undefined, which JSON leaves out). Rest-copying the parsed request made
 * an object several times slower to copy and encode, on every request's path.
 */
function processorRequest(req: InferRequest, index?: number): Record<ForwardedField, unknown> {
  const chat = req.kind === 'chat'
  return {
    kind: req.kind,
    model: req.model,
    stream: req.stream,
    options: optionsFor(req.options, index),
    requestId: req.requestId,
    traceparent: req.traceparent,
    messages: chat ? req.messages : undefined,
    prompt: chat ? undefined : req.prompt,
    system: chat ? undefined : req.system,
    raw: chat ? undefined : req.raw,
    tools: chat ? req.tools : undefined,
    toolChoice: chat ? req.toolChoice : undefined,
    parallelToolCalls: chat ? req.parallelToolCalls : undefined,
    format: req.format,
    think: req.think,
    logprobs: req.logprobs,
  }
}

/**
 * What a leg does with each streamed chunk: `seen()` counts it, then its reasoning and log
 * probabilities go to the sink's `onDelta`, its text to `onText`, and its tool calls to
 * `onDelta` after the text (the order they were generated in, see `deltaParts`), with its
 * choice's `index` (`n` > 1). Undefined for an answer given whole: it has no chunks to wait for (the
 * processor streams only when asked).
 */
function chunkHandler(
  sink: Sink,
  index: number | undefined,
  seen: () => void,
): ((chunk: StreamChunk) => void) | undefined {
  const { onText, onDelta } = sink
  if (!onText) return undefined
  return (chunk) => {
    seen()
    const { before, after } = deltaParts(chunk)
    if (before) onDelta?.(index === undefined ? before : { ...before, index })
    if (chunk.text !== '') onText(chunk.text, index)
    if (after) onDelta?.(index === undefined ? after : { ...after, index })
  }
}

/**
 * Runs `work` while `cancel` aborts when its caller stops (`watch`) or after
 * `timeoutMs` (ERR_TIMEOUT), and stops watching and timing when it ends;
 * tells `onAnswer` when it succeeded.
 */
export async function withDeadline<T>(
  cancel: CancelToken,
  timeoutMs: number,
  watch: Sink['watch'],
  onAnswer: Sink['onAnswer'],
  work: () => Promise<T>,
): Promise<T> {
  const unwatch = watch(cancel)
  const deadline = setTimeout(
    () => cancel.abort(MeshError.timeout(`no answer within ${timeoutMs} ms`)),
    timeoutMs,
  )
  try {
    const result = await work()
    onAnswer?.()
    return result
  } finally {
    clearTimeout(deadline)
    unwatch()
  }
}

/**
 * Forwards inference requests to processors: leases a slot, sends the request, streams
 * its text back, and on a retryable failure backs off and tries another processor
 * (at most `routing.maxAttempts`, within `retryBudgetMs`). Owns the legs (one try on one
 * processor each), so a processor that goes away fails its legs over.
 */
export class InferencePipeline {
  /** Client streams by `<caller key hex>/<stream id>`, for `cancel`. */
  readonly running = new Map<string, CancelToken>()
  /** Requests being forwarded (streamed or not). */
  active = 0
  /** Tries after a request's first, and legs stopped because their processor went away (metrics). */
  retries = 0
  failovers = 0
  /** Legs running on each processor, failed over when it goes away. */
  private readonly legs = new Map<string, Set<Leg>>()

  constructor(
    private readonly config: GatewayConfig,
    private readonly router: () => RouterFacility,
    private readonly net: () => NetFacility,
    private readonly log: () => Logger,
  ) {}

  /** Stops every leg on a processor that is gone or restarted: they cannot finish there. */
  failOver(entry: ProcessorEntry, what: string): void {
    const legs = this.legs.get(entry.id)
    if (!legs) return
    const reason = processorGone(entry, what)
    for (const leg of legs) {
      if (!leg.cancel.aborted && !leg.answering) this.failovers++
      leg.cancel.abort(reason)
    }
  }

  /**
   * A processor stopped answering: legs still waiting for their first text move to another
   * processor that serves their model, if there is one. The rest keep running (a busy
   * processor answers late; a dead one is dropped after `goneAfterMs`).
   */
  moveWaiting(entry: ProcessorEntry): void {
    const legs = this.legs.get(entry.id)
    if (!legs) return
    const reason = processorGone(entry, 'stopped answering')
    for (const leg of legs) {
      if (leg.answering || leg.cancel.aborted || !this.router().hasOtherFor(leg.model, entry.id)) continue
      this.failovers++
      leg.cancel.abort(reason)
    }
  }

  /**
   * Forwards one validated request (streams tracked for `cancel`, bounded by its timeout); its
   * `n` choices, when more than one, in parallel (see choices.ts). When it fails, the tokens
   * that ran all the same (what processors stopped by the deadline, or stopped because another
   * choice failed, had generated) are added to `spent`.
   */
  async run(
    req: InferRequest,
    sink: Sink,
    userId: string,
    spent: Spent = { promptTokens: 0, completionTokens: 0 },
  ): Promise<InferResult> {
    const key = sink.runningKey
    if (key && this.running.has(key))
      throw MeshError.badRequest(`request.id: stream '${req.id}' is already running`)
    const timeoutMs = Math.min(
      req.timeoutMs ?? this.config.inferenceTimeoutMs,
      this.config.inferenceTimeoutMs,
    )
    const cancel = new CancelToken()
    if (key) this.running.set(key, cancel)
    this.active++
    try {
      const n = req.n ?? 1
      const ctx: Forwarding = { userId, timeoutMs, spent }
      return await withDeadline(cancel, timeoutMs, sink.watch, sink.onAnswer, () =>
        n > 1
          ? runChoices(n, cancel, spent, (choice, stop) => this.forward(req, sink, stop, ctx, choice))
          : this.forward(req, sink, cancel, ctx),
      )
    } finally {
      this.active--
      if (key) this.running.delete(key)
    }
  }

  /**
   * One request, or one `choice` of it, tried on processors until one answers. Only the first
   * choice's waits and round trip go into the trace's timing (the legs run side by side).
   * `cancel` stops its leg as a caller stops a stream, whatever the reason (the caller gone, the
   * deadline): the processor answers what it generated until then, and a request stopped with
   * an error (the deadline's) throws it, the answer's tokens added to `spent`.
   */
  private async forward(
    req: InferRequest,
    sink: Sink,
    cancel: CancelToken,
    ctx: Forwarding,
    choice?: ChoiceLeg,
  ): Promise<InferResult> {
    const { userId, timeoutMs } = ctx
    const { routing } = this.config
    const started = Date.now()
    const tried = new Set<string>()
    let chunks = 0
    const body = processorRequest(req, choice?.index)
    const stopped = () => cancelError(cancel.reason)
    const trace = choice && choice.index > 0 ? undefined : sink.trace
    const avoid = choice?.avoid
    for (let attempt = 1; ; attempt++) {
      const waitFrom = trace ? performance.now() : 0
      // A request stopped meanwhile (its caller gone) takes no slot.
      const lease = await this.router().lease(req.model, { userId, exclude: tried, avoid, cancel })
      if (trace) trace.queueMs += performance.now() - waitFrom
      const { entry } = lease
      tried.add(entry.id)
      const leg: Leg = { cancel: new CancelToken(), model: req.model, answering: false }
      const unfollow = cancel.onAbort(() => leg.cancel.abort())
      let legs = this.legs.get(entry.id)
      if (!legs) {
        legs = new Set<Leg>()
        this.legs.set(entry.id, legs)
      }
      legs.add(leg)
      const sent = performance.now()
      sink.onDispatch?.()
      let firstChunkMs: number | undefined
      const onChunk = chunkHandler(sink, choice?.index, () => {
        firstChunkMs ??= performance.now() - sent
        leg.answering = true
        chunks++
      })
      try {
        if (cancel.aborted) throw stopped()
        const result = await this.net()
          .peer(entry.publicKey, entry.id)
          // The deadline stops the leg (`withDeadline`); the call's own timeout leaves the stopped
          // stream its grace to answer what it generated.
          .stream<ProcessorReply>('infer', body, {
            cancel: leg.cancel,
            timeout: timeoutMs + CANCEL_GRACE_MS,
            onChunk,
          })
        if (cancel.reason instanceof MeshError) {
          spend(ctx.spent, result)
          throw cancel.reason
        }
        const observedMs = performance.now() - sent
        lease.answered({
          // Unary answers have no first chunk: what the processor did not spend generating.
          // Loading the model is a one-time cost, not the processor's speed: a first request
          // that paid it must not brand the processor slow under `fastest`.
          ttftMs: Math.max(0, (firstChunkMs ?? observedMs - (result.evalMs ?? 0)) - (result.loadMs ?? 0)),
          completionTokens: result.completionTokens,
          evalMs: result.evalMs,
        })
        return answerOf(result, entry.id, trace, observedMs)
      } catch (err) {
        if (cancel.aborted) {
          const reason = cancel.reason instanceof MeshError ? cancel.reason : MeshError.from(err)
          // The gateway's own deadline (not a shorter one the client chose) ran out before the
          // processor produced anything: the processor hung, and its breaker should know.
          lease.stopped(reason.code === 'ERR_TIMEOUT' && req.timeoutMs === undefined && chunks === 0)
          throw reason
        }
        const verdict = lease.failed(err, chunks)
        if (trace) trace.retryMs += performance.now() - sent
        if (!verdict.retry) throw verdict.error
        if (verdict.rerouted) tried.delete(entry.id)
        ;(sink.trace?.log ?? this.log()).warn(
          { err: verdict.error, processor: entry.id, attempt, choice: choice?.index },
          verdict.rerouted ? 'request moved to another processor' : 'processor failed before first token',
        )
      } finally {
        legs.delete(leg)
        if (legs.size === 0) this.legs.delete(entry.id)
        unfollow()
      }
      const backoff = Math.random() * Math.min(routing.retryMaxMs, routing.retryBaseMs * 2 ** (attempt - 1))
      if (attempt >= routing.maxAttempts || Date.now() + backoff - started > routing.retryBudgetMs) {
        throw MeshError.noProcessor(req.model, `${attempt} attempt(s) failed`)
      }
      await sleep(backoff, cancel)
      if (trace) trace.retryMs += backoff
      if (cancel.aborted) throw stopped()
      this.retries++
    }
  }

  /** Stops every leg (the gateway stops without waiting). */
  abortAll(): void {
    for (const legs of this.legs.values()) for (const leg of legs) leg.cancel.abort()
  }
}
