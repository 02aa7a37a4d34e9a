/**
 * Backend over a running Ollama server, through the official `ollama` client
 * (client.ts) over keep-alive sockets (keep-alive-fetch.ts). Each request is a
 * call (call.ts) that stops on the caller's abort, on `close()`, or when
 * Ollama stops making progress.
 */
import type { AbortableAsyncIterator, ChatResponse, GenerateResponse, Ollama } from 'ollama'
import { MeshError } from '../../../kernel/errors.js'
import type {
  Cancellable,
  ChatRequest,
  EmbedRequest,
  EmbedResult,
  GenerateCallbacks,
  GenerateRequest,
  GenerationResult,
  ModelDetails,
  ModelInfo,
  RunningModel,
} from '../../../kernel/wire.js'
import { cancelledResult } from '../generation-stats.js'
import {
  checkCallerSignal,
  checkEmbedInput,
  checkModelName,
  checkOnToken,
  checkPrompt,
} from '../request-checks.js'
import type { PullCallbacks, PullingBackend, PullProgress, PullRequest, PullResult } from '../types.js'
import { AnswerParts } from './answer-parts.js'
import { Call } from './call.js'
import { checkHost } from './client.js'
import { detailOf, stoppedError, toMeshError } from './errors.js'
import { KeepAliveFetch } from './keep-alive-fetch.js'
import { chatRequest, embedRequest, generateRequest } from './requests.js'
import { detailsFrom, embedResultOf, type FinalStats, finalResult, infoOf, runningOf } from './responses.js'

/**
 * Longest wait for Ollama to show progress: response headers, or the next
 * streamed chunk. Loading a large model before the first byte can take minutes.
 */
const DEFAULT_REQUEST_TIMEOUT_MS = 5 * 60_000
/** `open()` only asks for the version; a healthy server answers at once. */
const OPEN_TIMEOUT_MS = 5_000

export interface OllamaBackendOptions {
  /** Ollama's base URL, e.g. http://127.0.0.1:11434 (OLLAMA_HOST forms like `host:port` work too). */
  host: string
  /** Longest wait for any progress from Ollama (headers or next chunk). Default 5 min. */
  requestTimeoutMs?: number
}

/** An Ollama progress frame with only the fields it has. */
function progressOf(frame: {
  status: string
  digest?: string
  total?: number
  completed?: number
}): PullProgress {
  const p: PullProgress = { status: String(frame.status) }
  if (typeof frame.digest === 'string' && frame.digest !== '') p.digest = frame.digest
  if (typeof frame.total === 'number') p.total = frame.total
  if (typeof frame.completed === 'number') p.completed = frame.completed
  return p
}

type Stream = AbortableAsyncIterator<ChatResponse | GenerateResponse>

export class OllamaBackend implements PullingBackend {
  readonly kind = 'ollama' as const
  private readonly host: string
  private readonly requestTimeoutMs: number
  private readonly transport = new KeepAliveFetch()
  /** Calls in flight, which close() stops. */
  private readonly inflight = new Set<Call>()
  private serverVersion: string | null = null
  private closed = false

  /** @throws ERR_BAD_CONFIG for a host that is not a URL or a bad timeout */
  constructor(opts: OllamaBackendOptions) {
    const { host, requestTimeoutMs = DEFAULT_REQUEST_TIMEOUT_MS } = opts
    this.host = checkHost(host)
    if (!Number.isFinite(requestTimeoutMs) || requestTimeoutMs <= 0) {
      throw MeshError.badConfig('requestTimeoutMs must be a number > 0')
    }
    this.requestTimeoutMs = requestTimeoutMs
  }

  describe(): string {
    return `ollama: ${this.host}${this.serverVersion ? ` (Ollama ${this.serverVersion})` : ''}`
  }

  /** Checks that Ollama answers /api/version. @throws ERR_BACKEND_UNAVAILABLE */
  async open(): Promise<void> {
    if (this.closed) throw MeshError.backendUnavailable('ollama backend is closed')
    const call = this.begin({}, OPEN_TIMEOUT_MS)
    try {
      const { version } = await call.client.version()
      if (typeof version !== 'string' || version === '') {
        throw MeshError.backendUnavailable(
          `${this.host} answered /api/version without a version: not Ollama?`,
        )
      }
      this.serverVersion = version
    } catch (err) {
      const why = call.cause() === 'timeout' ? `no answer within ${OPEN_TIMEOUT_MS} ms` : detailOf(err)
      throw MeshError.backendUnavailable(`Ollama at ${this.host} does not answer: ${why}`, err)
    } finally {
      call.end()
    }
  }

  /** Aborts in-flight requests; later calls fail with ERR_BACKEND_UNAVAILABLE. Safe to call twice. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    for (const call of this.inflight) call.stop('closed')
    this.transport.close()
  }

  /** @throws ERR_BACKEND_UNAVAILABLE */
  async listModels(): Promise<ModelInfo[]> {
    return this.request(undefined, {}, async (client) => {
      const { models } = await client.list()
      return (models ?? []).map(infoOf)
    })
  }

  /** @throws ERR_MODEL_NOT_FOUND, ERR_BAD_REQUEST, ERR_BACKEND_UNAVAILABLE */
  async showModel(name: string): Promise<ModelDetails> {
    const model = checkModelName(name)
    return this.request(model, {}, async (client) => {
      const [shown, listed] = await Promise.all([client.show({ model }), client.list()])
      return detailsFrom(model, shown, listed)
    })
  }

  /** Ollama's /api/delete. @throws ERR_MODEL_NOT_FOUND, ERR_BACKEND_UNAVAILABLE */
  async deleteModel(name: string): Promise<void> {
    const model = checkModelName(name)
    await this.request(model, {}, (client) => client.delete({ model }))
  }

  /** Ollama's /api/copy. @throws ERR_MODEL_NOT_FOUND (source), ERR_BACKEND_UNAVAILABLE */
  async copyModel(source: string, destination: string): Promise<void> {
    const model = checkModelName(source)
    const to = checkModelName(destination)
    await this.request(model, {}, (client) => client.copy({ source: model, destination: to }))
  }

  /** An empty generate with `keep_alive` (seconds; -1: until unloaded) loads it. @throws ERR_MODEL_NOT_FOUND */
  async loadModel(name: string, keepAliveMs?: number): Promise<void> {
    const model = checkModelName(name)
    const keep_alive = keepAliveMs === undefined ? undefined : keepAliveMs < 0 ? -1 : keepAliveMs / 1000
    await this.request(model, {}, (client) =>
      client.generate({
        model,
        prompt: '',
        stream: false,
        ...(keep_alive !== undefined ? { keep_alive } : {}),
      }),
    )
  }

  /** An empty generate with `keep_alive: 0` unloads it; false when it was not loaded. */
  async unloadModel(name: string): Promise<boolean> {
    const model = checkModelName(name)
    const loaded = (await this.runningModels()).some((m) => m.name === model)
    if (!loaded) {
      // Not loaded: still a 404 for a model Ollama does not have.
      await this.showModel(model)
      return false
    }
    await this.request(model, {}, (client) =>
      client.generate({ model, prompt: '', stream: false, keep_alive: 0 }),
    )
    return true
  }

  /** @throws ERR_BACKEND_UNAVAILABLE */
  async runningModels(): Promise<RunningModel[]> {
    return this.request(undefined, {}, async (client) => {
      const { models } = await client.ps()
      return (models ?? []).map(runningOf)
    })
  }

  /**
   * Streams a chat completion through `cb.onToken`, and its reasoning, tool calls and log
   * probabilities through `cb.onDelta` (in the result without it; tool calls in it always).
   * Tools, `format`, `think`, `logprobs` and the penalties go to Ollama as they are; a
   * `toolChoice` of 'none' shows the model no tools, `parallelToolCalls: false` keeps the
   * first call only. Aborting after some text returns it with doneReason 'cancelled'.
   * @throws ERR_BAD_REQUEST, ERR_UNSUPPORTED (`toolChoice` 'required' or a named function),
   *         ERR_MODEL_NOT_FOUND, ERR_CANCELLED (aborted before any text), ERR_BACKEND_UNAVAILABLE
   */
  async chat(req: ChatRequest, cb: GenerateCallbacks = {}): Promise<GenerationResult> {
    const model = checkModelName(req?.model)
    if (!Array.isArray(req.messages)) throw MeshError.badRequest('messages must be an array')
    const body = chatRequest(model, req)
    const maxCalls = req.parallelToolCalls === false ? 1 : Number.POSITIVE_INFINITY
    return this.stream(model, cb, maxCalls, (client) => client.chat(body))
  }

  /**
   * Streams a completion through `cb.onToken` (and `cb.onDelta`, as `chat`); `system` and `raw` as in Ollama.
   * @throws like `chat`
   */
  async generate(req: GenerateRequest, cb: GenerateCallbacks = {}): Promise<GenerationResult> {
    const model = checkModelName(req?.model)
    checkPrompt(req.prompt)
    return this.stream(model, cb, 0, (client) => client.generate(generateRequest(model, req)))
  }

  /** @throws ERR_BAD_REQUEST, ERR_MODEL_NOT_FOUND, ERR_CANCELLED, ERR_BACKEND_UNAVAILABLE */
  async embed(req: EmbedRequest, cb: Cancellable = {}): Promise<EmbedResult> {
    const model = checkModelName(req?.model)
    checkEmbedInput(req.input)
    return this.request(model, cb ?? {}, async (client) =>
      embedResultOf(await client.embed(embedRequest(model, req))),
    )
  }

  /**
   * Ollama's own pull from its registry, its progress frames passed on as they come.
   * @throws ERR_BAD_REQUEST (bad name), ERR_UNSUPPORTED (`source` or `digest`: Ollama pulls
   *         from its registry and checks each layer itself), ERR_MODEL_NOT_FOUND (Ollama's
   *         404), ERR_CANCELLED, ERR_BACKEND_UNAVAILABLE (unreachable, an error frame, or no
   *         `success` frame)
   */
  async pullModel(req: PullRequest, cb: PullCallbacks = {}): Promise<PullResult> {
    const model = checkModelName(req?.model)
    if (req.source !== undefined)
      throw MeshError.unsupported('source', 'is not used by Ollama: it pulls from its registry')
    if (req.digest !== undefined)
      throw MeshError.unsupported('digest', 'is checked by Ollama itself, layer by layer')
    if (cb.onProgress !== undefined && typeof cb.onProgress !== 'function')
      throw MeshError.badRequest('onProgress must be a function')
    this.checkOpen(cb)
    const call = this.begin(cb)
    let last = ''
    try {
      for await (const frame of await call.client.pull({ model, stream: true })) {
        if (call.stopped) break
        call.kick()
        last = frame.status
        cb.onProgress?.(progressOf(frame))
      }
    } catch (err) {
      throw this.failure(err, call, model)
    } finally {
      call.end()
    }
    const cause = call.cause()
    if (cause) throw stoppedError(cause, this.requestTimeoutMs)
    if (last !== 'success')
      throw MeshError.backendUnavailable(`Ollama's pull of '${model}' ended without success`)
    return { model }
  }

  private begin(cb: Cancellable, timeoutMs = this.requestTimeoutMs): Call {
    return new Call({
      host: this.host,
      transport: this.transport,
      signal: cb.signal,
      cancel: cb.cancel,
      timeoutMs,
      inflight: this.inflight,
    })
  }

  /** Runs one non-streaming exchange with errors mapped to MeshErrors. */
  private async request<T>(
    model: string | undefined,
    cb: Cancellable,
    fn: (client: Ollama) => Promise<T>,
  ): Promise<T> {
    this.checkOpen(cb)
    const call = this.begin(cb)
    try {
      return await fn(call.client)
    } catch (err) {
      throw this.failure(err, call, model)
    } finally {
      call.end()
    }
  }

  /** Runs one streamed exchange; `maxCalls`: the tool calls passed on at most. */
  private async stream(
    model: string,
    cb: GenerateCallbacks,
    maxCalls: number,
    start: (client: Ollama) => Promise<Stream>,
  ): Promise<GenerationResult> {
    checkOnToken(cb?.onToken)
    if (cb?.onDelta !== undefined && typeof cb.onDelta !== 'function')
      throw MeshError.badRequest('onDelta must be a function')
    this.checkOpen(cb ?? {})
    const call = this.begin(cb ?? {})
    const started = performance.now()
    const parts = new AnswerParts(cb ?? {}, maxCalls)
    let final: FinalStats | null = null
    try {
      // A stop cuts the call's fetch short (keep-alive-fetch.ts): before the headers, or the body mid-stream.
      for await (const part of await start(call.client)) {
        // Chunks already read off the wire still arrive after an abort; the caller has stopped listening.
        if (call.stopped) break
        call.kick()
        parts.take(part)
        // No break: the client's iterator ends by itself after the done frame and releases the body.
        if (part.done) final = part
      }
    } catch (err) {
      if (!call.stopped) throw this.failure(err, call, model)
    } finally {
      call.end()
    }
    // A done frame read before the abort landed is a complete answer.
    if (final !== null) return parts.complete(finalResult(parts.text, final))
    return parts.complete(this.unfinished(parts, call, started))
  }

  /** The result of a stream that ended without its done frame. @throws ERR_CANCELLED, ERR_BACKEND_UNAVAILABLE */
  private unfinished(parts: AnswerParts, call: Call, started: number): GenerationResult {
    const cause = call.cause()
    if (cause === null) throw MeshError.backendUnavailable('Ollama ended the stream without a final frame')
    if (cause === 'timeout' || parts.tokens === 0) throw stoppedError(cause, this.requestTimeoutMs)
    return cancelledResult(parts.text, parts.tokens, performance.now() - started)
  }

  /** @throws ERR_BACKEND_UNAVAILABLE when closed; ERR_BAD_REQUEST, ERR_CANCELLED for the caller's signal or token */
  private checkOpen(cb: Cancellable): void {
    if (this.closed) throw MeshError.backendUnavailable('ollama backend is closed')
    checkCallerSignal(cb.signal)
    if (cb.cancel?.aborted) throw MeshError.cancelled()
  }

  private failure(err: unknown, call: Call, model: string | undefined): MeshError {
    return toMeshError(err, { host: this.host, cause: call.cause(), timeoutMs: this.requestTimeoutMs, model })
  }
}
