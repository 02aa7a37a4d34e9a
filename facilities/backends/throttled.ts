import { signalOf } from '../../kernel/cancel.js'
import { MeshError } from '../../kernel/errors.js'
import type {
  Cancellable,
  ChatRequest,
  EmbedRequest,
  EmbedResult,
  GenerateCallbacks,
  GenerateRequest,
  GenerationDelta,
  GenerationResult,
  InferenceSource,
  ModelDetails,
  ModelInfo,
  RunningModel,
} from '../../kernel/wire.js'

export interface ThrottleOptions {
  /** Most pieces of text per second handed out per generation. */
  tokensPerSecond?: number | undefined
  /** Wait before the first piece. */
  firstTokenDelayMs?: number | undefined
}

/** Waits `ms` or until `signal` aborts. */
function pause(ms: number, signal?: AbortSignal): Promise<void> {
  if (ms <= 0 || signal?.aborted) return Promise.resolve()
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal?.addEventListener('abort', done, { once: true })
  })
}

/**
 * A source that hands out its inner source's text no faster than a set rate,
 * after a set first-token delay: a slower machine, by configuration. The
 * generation holds its slot until the last piece is out, and the counts it
 * reports (evalMs, promptEvalMs) are the paced ones, so the mesh sees exactly
 * the processor it would see on slower hardware. Cancelling stops at once and
 * returns what was handed out.
 */
export class ThrottledSource implements InferenceSource {
  private readonly interval: number
  private readonly firstDelay: number

  constructor(
    private readonly inner: InferenceSource,
    opts: ThrottleOptions,
  ) {
    const { tokensPerSecond, firstTokenDelayMs = 0 } = opts
    this.interval = tokensPerSecond ? 1000 / tokensPerSecond : 0
    this.firstDelay = firstTokenDelayMs
  }

  listModels(): Promise<ModelInfo[]> {
    return this.inner.listModels()
  }

  showModel(name: string): Promise<ModelDetails> {
    return this.inner.showModel(name)
  }

  runningModels(): Promise<RunningModel[]> {
    return this.inner.runningModels()
  }

  embed(req: EmbedRequest, cb?: Cancellable): Promise<EmbedResult> {
    return this.inner.embed(req, cb)
  }

  chat(req: ChatRequest, cb: GenerateCallbacks = {}): Promise<GenerationResult> {
    return this.paced(cb, (inner) => this.inner.chat(req, inner))
  }

  generate(req: GenerateRequest, cb: GenerateCallbacks = {}): Promise<GenerationResult> {
    return this.paced(cb, (inner) => this.inner.generate(req, inner))
  }

  /**
   * Runs `run` with callbacks that queue what it streams, and hands the queue out in order:
   * text pieces at the set rate, reasoning, tool calls and log probabilities (`cb.onDelta`,
   * passed on only when given, so a source without it puts them in its result) at once when
   * their turn comes, so they keep their place among the text.
   */
  private async paced(
    cb: GenerateCallbacks,
    run: (inner: GenerateCallbacks) => Promise<GenerationResult>,
  ): Promise<GenerationResult> {
    const { onToken, onDelta } = cb
    // Pacing waits on timers that a cancel must cut short: this path wants a real signal.
    const signal = signalOf(cb)
    const started = performance.now()
    const queue: Array<string | GenerationDelta> = []
    let wake: (() => void) | null = null
    const poke = () => {
      const w = wake
      wake = null
      w?.()
    }
    const push = (piece: string | GenerationDelta) => {
      queue.push(piece)
      poke()
    }
    let innerResult: GenerationResult | null = null
    let innerError: unknown = null
    let innerDone = false
    const inner: GenerateCallbacks = { ...(signal ? { signal } : {}), onToken: push }
    if (onDelta) inner.onDelta = push
    const running = run(inner).then(
      (r) => {
        innerResult = r
      },
      (err) => {
        innerError = err
      },
    )
    void running.finally(() => {
      innerDone = true
      poke()
    })

    await pause(this.firstDelay, signal)
    const firstAt = performance.now()
    let next = 0
    let released = 0
    let text = ''
    while (!signal?.aborted) {
      if (next < queue.length) {
        const piece = queue[next] as string | GenerationDelta
        if (typeof piece !== 'string') {
          next++
          onDelta?.(piece)
          continue
        }
        const wait = firstAt + released * this.interval - performance.now()
        if (wait > 0) {
          await pause(wait, signal)
          continue
        }
        next++
        released++
        text += piece
        onToken?.(piece)
        continue
      }
      if (innerDone) break
      await new Promise<void>((resolve) => {
        wake = resolve
      })
    }
    await running
    const ended = performance.now()
    const timing = () => ({
      totalMs: ended - started,
      promptEvalMs: firstAt - started,
      evalMs: ended - firstAt,
    })
    if (signal?.aborted) {
      if (next === 0) throw MeshError.cancelled()
      const partial = innerResult as GenerationResult | null
      return {
        text,
        doneReason: 'cancelled',
        promptTokens: partial?.promptTokens ?? 0,
        completionTokens: released,
        ...timing(),
        loadMs: partial?.loadMs ?? 0,
      }
    }
    if (innerError) throw innerError
    const result = innerResult as unknown as GenerationResult
    return { ...result, ...timing() }
  }
}
