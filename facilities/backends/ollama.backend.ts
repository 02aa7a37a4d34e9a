/**
 * Backend over a running Ollama server, through the official `ollama` client.
 * Every call gets its own client whose fetch carries one signal that fires on
 * the caller's abort, on `close()`, or when Ollama stops making progress, so a
 * request can be stopped while the model is still loading (before the client
 * hands out its abortable iterator) as well as mid-stream.
 */
import { setMaxListeners } from 'node:events'
import { type ChatResponse, type GenerateResponse, type ModelResponse, Ollama } from 'ollama'
import { signalOf } from '../../kernel/cancel.js'
import { MeshError } from '../../kernel/errors.js'
import { errorMessage } from '../../kernel/util.js'
import type {
  Cancellable,
  ChatRequest,
  DoneReason,
  EmbedRequest,
  EmbedResult,
  GenerateCallbacks,
  GenerateRequest,
  GenerationResult,
  ModelDetails,
  ModelDetailsSummary,
  ModelInfo,
  RunningModel,
} from '../../kernel/wire.js'
import type { Backend } from './types.js'

/**
 * Longest wait for Ollama to show progress: response headers, or the next
 * streamed chunk. Loading a large model before the first byte can take minutes.
 */
const DEFAULT_REQUEST_TIMEOUT_MS = 5 * 60_000
/** `open()` only asks for the version; a healthy server answers at once. */
const OPEN_TIMEOUT_MS = 5_000
const DEFAULT_PROBE_TIMEOUT_MS = 1_000
const NS_PER_MS = 1_000_000

export interface OllamaBackendOptions {
  /** Ollama's base URL, e.g. http://127.0.0.1:11434 (OLLAMA_HOST forms like `host:port` work too). */
  host: string
  /** Longest wait for any progress from Ollama (headers or next chunk). Default 5 min. */
  requestTimeoutMs?: number
}

type StopCause = 'cancelled' | 'closed' | 'timeout'

/** One request's lifetime: its signal, a progress watchdog, and why it stopped. */
interface Call {
  readonly signal: AbortSignal
  readonly client: Ollama
  /** Progress seen: restart the timeout. */
  kick(): void
  cause(): StopCause | null
  end(): void
}

type Stats = Pick<
  GenerateResponse,
  | 'done_reason'
  | 'total_duration'
  | 'load_duration'
  | 'prompt_eval_count'
  | 'prompt_eval_duration'
  | 'eval_count'
  | 'eval_duration'
>

/** fetch's own message is only "fetch failed"; the reason (ECONNREFUSED …) is in its cause. */
function detailOf(err: unknown): string {
  const message = errorMessage(err)
  return err instanceof Error && err.cause instanceof Error ? `${message} (${err.cause.message})` : message
}

function msOf(ns: unknown): number {
  return typeof ns === 'number' && Number.isFinite(ns) && ns > 0 ? ns / NS_PER_MS : 0
}

function countOf(n: unknown): number {
  return typeof n === 'number' && Number.isFinite(n) && n > 0 ? Math.round(n) : 0
}

function doneReasonOf(reason: unknown): DoneReason {
  return reason === 'length' ? 'length' : 'stop'
}

/** Ollama sends timestamps as strings although the client types them as Date. */
function isoOf(v: unknown): string {
  if (v instanceof Date) return v.toISOString()
  if (typeof v === 'string' && !Number.isNaN(Date.parse(v))) return new Date(v).toISOString()
  return new Date(0).toISOString()
}

function detailsOf(d: Partial<ModelResponse['details']> | undefined): ModelDetailsSummary {
  return {
    format: d?.format ?? '',
    family: d?.family ?? '',
    // Ollama sends null for a model with no family list.
    families: Array.isArray(d?.families) ? d.families : d?.family ? [d.family] : [],
    parameterSize: d?.parameter_size ?? '',
    quantizationLevel: d?.quantization_level ?? '',
  }
}

function infoOf(m: ModelResponse): ModelInfo {
  return {
    name: m.name || m.model,
    size: countOf(m.size),
    digest: m.digest ?? '',
    modifiedAt: isoOf(m.modified_at),
    details: detailsOf(m.details),
  }
}

function checkModel(model: unknown): string {
  if (typeof model !== 'string' || model.trim() === '')
    throw MeshError.badRequest('model must be a non-empty string')
  return model
}

/** The client's error for a non-2xx reply carries the status; stream errors are plain Errors. */
function statusOf(err: unknown): number | null {
  const status = (err as { status_code?: unknown } | null)?.status_code
  return typeof status === 'number' ? status : null
}

/** True for errors that mean the server could not be reached at all. */
function isConnectionError(err: unknown): boolean {
  let e: unknown = err
  for (let depth = 0; depth < 4 && e instanceof Error; depth++) {
    const code = (e as { code?: unknown }).code
    if (
      typeof code === 'string' &&
      /^(ECONNREFUSED|ECONNRESET|EHOSTUNREACH|ENOTFOUND|ETIMEDOUT|EAI_AGAIN|UND_ERR)/.test(code)
    ) {
      return true
    }
    if (e.message === 'fetch failed') return true
    e = e.cause
  }
  return false
}

/**
 * The client logs to the console when an error reply is not JSON (a proxy's or
 * another server's page); giving it the `{"error"}` body it expects keeps
 * stdout clean and the message intact.
 */
async function jsonErrors(res: Response): Promise<Response> {
  if (res.ok || res.headers.get('content-type')?.includes('application/json')) return res
  const text = (await res.text().catch(() => '')).trim()
  return new Response(JSON.stringify({ error: text || `${res.status} ${res.statusText}` }), {
    status: res.status,
    statusText: res.statusText,
    headers: { 'Content-Type': 'application/json' },
  })
}

/**
 * Probes `host` for an Ollama server: true when GET /api/version answers with
 * a version within `timeoutMs`. Never throws.
 */
export async function probeOllama(host: string, timeoutMs = DEFAULT_PROBE_TIMEOUT_MS): Promise<boolean> {
  try {
    const signal = AbortSignal.timeout(timeoutMs)
    const client = new Ollama({
      host,
      fetch: async (input, init) => jsonErrors(await fetch(input, { ...init, signal })),
    })
    const { version } = await client.version()
    return typeof version === 'string' && version !== ''
  } catch {
    return false
  }
}

export class OllamaBackend implements Backend {
  readonly kind = 'ollama' as const
  private readonly host: string
  private readonly requestTimeoutMs: number
  private readonly closeController = new AbortController()
  private serverVersion: string | null = null
  private closed = false

  /** @throws ERR_BAD_CONFIG for a host that is not a URL or a bad timeout */
  constructor(opts: OllamaBackendOptions) {
    const { host, requestTimeoutMs = DEFAULT_REQUEST_TIMEOUT_MS } = opts
    if (typeof host !== 'string' || host.trim() === '') throw MeshError.badConfig('host must be a URL')
    try {
      // The client parses the host the same way; fail here rather than on the first request.
      new Ollama({ host })
    } catch (err) {
      throw MeshError.badConfig(`host '${host}' is not a URL: ${errorMessage(err)}`)
    }
    if (!Number.isFinite(requestTimeoutMs) || requestTimeoutMs <= 0) {
      throw MeshError.badConfig('requestTimeoutMs must be a number > 0')
    }
    this.host = host
    this.requestTimeoutMs = requestTimeoutMs
    // Every in-flight request listens for close; many at once is normal, not a leak.
    setMaxListeners(0, this.closeController.signal)
  }

  describe(): string {
    return `ollama: ${this.host}${this.serverVersion ? ` (Ollama ${this.serverVersion})` : ''}`
  }

  /** Checks that Ollama answers /api/version. @throws ERR_BACKEND_UNAVAILABLE */
  async open(): Promise<void> {
    if (this.closed) throw MeshError.backendUnavailable('ollama backend is closed')
    const call = this.begin(undefined, OPEN_TIMEOUT_MS)
    try {
      const { version } = await call.client.version()
      if (typeof version !== 'string' || version === '') {
        throw MeshError.backendUnavailable(
          `${this.host} answered /api/version without a version: not Ollama?`,
        )
      }
      this.serverVersion = version
    } catch (err) {
      if (err instanceof MeshError) throw err
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
    this.closeController.abort()
  }

  /** @throws ERR_BACKEND_UNAVAILABLE */
  async listModels(): Promise<ModelInfo[]> {
    return this.request(undefined, undefined, async (call) => {
      const { models } = await call.client.list()
      return (models ?? []).map(infoOf)
    })
  }

  /** @throws ERR_MODEL_NOT_FOUND, ERR_BAD_REQUEST, ERR_BACKEND_UNAVAILABLE */
  async showModel(name: string): Promise<ModelDetails> {
    const model = checkModel(name)
    return this.request(model, undefined, async (call) => {
      // /api/show has no size or digest; the listing has them.
      const [shown, listed] = await Promise.all([call.client.show({ model }), call.client.list()])
      const entry = (listed.models ?? []).find(
        (m) => m.name === model || m.model === model || m.name === `${model}:latest`,
      )
      const modelInfo: Record<string, unknown> = {}
      // Typed as a Map, but JSON gives a plain object.
      for (const [k, v] of Object.entries((shown.model_info ?? {}) as object)) modelInfo[k] = v
      return {
        name: entry ? entry.name : model,
        size: entry ? countOf(entry.size) : 0,
        digest: entry?.digest ?? '',
        modifiedAt: isoOf(shown.modified_at ?? entry?.modified_at),
        details: detailsOf(shown.details ?? entry?.details),
        template: shown.template ?? '',
        parameters: shown.parameters ?? '',
        modelInfo,
        capabilities: Array.isArray(shown.capabilities) ? shown.capabilities : [],
      }
    })
  }

  /** @throws ERR_BACKEND_UNAVAILABLE */
  async runningModels(): Promise<RunningModel[]> {
    return this.request(undefined, undefined, async (call) => {
      const { models } = await call.client.ps()
      return (models ?? []).map((m) => ({
        ...infoOf(m),
        expiresAt: isoOf(m.expires_at),
        sizeVram: countOf(m.size_vram),
      }))
    })
  }

  /**
   * Streams a chat completion through `cb.onToken`. Aborting after some text
   * returns it with doneReason 'cancelled'.
   * @throws ERR_BAD_REQUEST, ERR_MODEL_NOT_FOUND, ERR_CANCELLED (aborted before any text), ERR_BACKEND_UNAVAILABLE
   */
  async chat(req: ChatRequest, cb: GenerateCallbacks = {}): Promise<GenerationResult> {
    const model = checkModel(req?.model)
    if (!Array.isArray(req.messages)) throw MeshError.badRequest('messages must be an array')
    return this.stream(model, cb, (client) =>
      client.chat({
        model,
        messages: req.messages.map((m) => ({ role: m.role, content: m.content })),
        ...(req.options ? { options: req.options } : {}),
        stream: true,
      }),
    )
  }

  /**
   * Streams a completion through `cb.onToken`; `system` and `raw` as in Ollama.
   * @throws like `chat`
   */
  async generate(req: GenerateRequest, cb: GenerateCallbacks = {}): Promise<GenerationResult> {
    const model = checkModel(req?.model)
    if (typeof req.prompt !== 'string') throw MeshError.badRequest('prompt must be a string')
    return this.stream(model, cb, (client) =>
      client.generate({
        model,
        prompt: req.prompt,
        ...(req.system !== undefined ? { system: req.system } : {}),
        ...(req.raw !== undefined ? { raw: req.raw } : {}),
        ...(req.options ? { options: req.options } : {}),
        stream: true,
      }),
    )
  }

  /** @throws ERR_BAD_REQUEST, ERR_MODEL_NOT_FOUND, ERR_CANCELLED, ERR_BACKEND_UNAVAILABLE */
  async embed(req: EmbedRequest, cb: Cancellable = {}): Promise<EmbedResult> {
    const model = checkModel(req?.model)
    if (!Array.isArray(req.input) || !req.input.every((s) => typeof s === 'string')) {
      throw MeshError.badRequest('input must be an array of strings')
    }
    return this.request(model, signalOf(cb), async (call) => {
      const res = await call.client.embed({
        model,
        input: req.input,
        ...(req.truncate !== undefined ? { truncate: req.truncate } : {}),
      })
      return {
        embeddings: res.embeddings ?? [],
        promptTokens: countOf(res.prompt_eval_count),
        totalMs: msOf(res.total_duration),
        loadMs: msOf(res.load_duration),
      }
    })
  }

  // ---------------------------------------------------------------- internals

  private begin(userSignal: AbortSignal | undefined, timeoutMs = this.requestTimeoutMs): Call {
    const controller = new AbortController()
    let cause: StopCause | null = null
    const stop = (why: StopCause) => {
      if (cause) return
      cause = why
      controller.abort()
    }
    const onUser = () => stop('cancelled')
    const onClose = () => stop('closed')
    userSignal?.addEventListener('abort', onUser, { once: true })
    this.closeController.signal.addEventListener('abort', onClose, { once: true })
    let timer: NodeJS.Timeout | null = null
    const kick = () => {
      if (timer) clearTimeout(timer)
      timer = setTimeout(() => stop('timeout'), timeoutMs)
    }
    kick()
    const signal = controller.signal
    const client = new Ollama({
      host: this.host,
      fetch: async (input, init) => {
        // The client passes its own signal for streams (the iterator's abort()); honour both.
        const merged = init?.signal ? AbortSignal.any([init.signal, signal]) : signal
        const res = await fetch(input, { ...init, signal: merged })
        kick()
        return jsonErrors(res)
      },
    })
    return {
      signal,
      client,
      kick,
      cause: () => cause,
      end: () => {
        if (timer) clearTimeout(timer)
        timer = null
        userSignal?.removeEventListener('abort', onUser)
        this.closeController.signal.removeEventListener('abort', onClose)
      },
    }
  }

  /** Runs one non-streaming exchange with errors mapped to MeshErrors. */
  private async request<T>(
    model: string | undefined,
    userSignal: AbortSignal | undefined,
    fn: (call: Call) => Promise<T>,
  ): Promise<T> {
    this.checkOpen(userSignal)
    const call = this.begin(userSignal)
    try {
      return await fn(call)
    } catch (err) {
      throw this.toMeshError(err, call, model)
    } finally {
      call.end()
    }
  }

  private async stream(
    model: string,
    cb: GenerateCallbacks,
    start: (client: Ollama) => Promise<AsyncIterable<ChatResponse | GenerateResponse> & { abort(): void }>,
  ): Promise<GenerationResult> {
    const { onToken } = cb ?? {}
    const userSignal = cb ? signalOf(cb) : undefined
    if (onToken !== undefined && typeof onToken !== 'function')
      throw MeshError.badRequest('onToken must be a function')
    this.checkOpen(userSignal)
    const call = this.begin(userSignal)
    const started = performance.now()
    const pieces: string[] = []
    let final: Stats | null = null
    let iterator: (AsyncIterable<ChatResponse | GenerateResponse> & { abort(): void }) | null = null
    const abortIterator = () => iterator?.abort()
    call.signal.addEventListener('abort', abortIterator, { once: true })
    try {
      iterator = await start(call.client)
      for await (const part of iterator) {
        // Chunks already read off the wire still arrive after an abort; the caller has stopped listening.
        if (call.signal.aborted) break
        call.kick()
        const text = 'message' in part ? part.message?.content : part.response
        if (typeof text === 'string' && text !== '') {
          pieces.push(text)
          onToken?.(text)
        }
        // No break: the client's iterator ends by itself after the done frame and releases the body.
        if (part.done) final = part
      }
    } catch (err) {
      if (!call.signal.aborted) throw this.toMeshError(err, call, model)
    } finally {
      call.signal.removeEventListener('abort', abortIterator)
      call.end()
    }

    const text = pieces.join('')
    const cause = call.cause()
    // A done frame read before the abort landed is a complete answer.
    if (final === null) {
      if (cause === 'cancelled' || cause === 'closed') {
        if (text === '') {
          throw cause === 'closed'
            ? MeshError.backendUnavailable('ollama backend closed')
            : MeshError.cancelled()
        }
        return {
          text,
          doneReason: 'cancelled',
          promptTokens: 0,
          // One streamed chunk per token is how Ollama streams.
          completionTokens: pieces.length,
          totalMs: performance.now() - started,
          loadMs: 0,
          promptEvalMs: 0,
          evalMs: 0,
        }
      }
      if (cause === 'timeout') {
        throw MeshError.backendUnavailable(`Ollama made no progress for ${this.requestTimeoutMs} ms`)
      }
      throw MeshError.backendUnavailable('Ollama ended the stream without a final frame')
    }
    return {
      text,
      doneReason: doneReasonOf(final.done_reason),
      promptTokens: countOf(final.prompt_eval_count),
      completionTokens: countOf(final.eval_count),
      totalMs: msOf(final.total_duration),
      loadMs: msOf(final.load_duration),
      promptEvalMs: msOf(final.prompt_eval_duration),
      evalMs: msOf(final.eval_duration),
    }
  }

  private checkOpen(userSignal: AbortSignal | undefined): void {
    if (this.closed) throw MeshError.backendUnavailable('ollama backend is closed')
    if (userSignal !== undefined && !(userSignal instanceof AbortSignal)) {
      throw MeshError.badRequest('signal must be an AbortSignal')
    }
    if (userSignal?.aborted) throw MeshError.cancelled()
  }

  private toMeshError(err: unknown, call: Call, model: string | undefined): MeshError {
    if (err instanceof MeshError) return err
    switch (call.cause()) {
      case 'cancelled':
        return MeshError.cancelled()
      case 'closed':
        return MeshError.backendUnavailable('ollama backend closed')
      case 'timeout':
        return MeshError.backendUnavailable(`Ollama made no progress for ${this.requestTimeoutMs} ms`, err)
      default:
        break
    }
    const message = errorMessage(err)
    const status = statusOf(err)
    if (status === 404 || (status === null && /not found/i.test(message) && !isConnectionError(err))) {
      // Without a model in the request, a 404 means the endpoint itself is missing: not Ollama.
      return model
        ? MeshError.modelNotFound(model)
        : MeshError.backendUnavailable(`${this.host} is not an Ollama server: ${message}`, err)
    }
    if (status === 400) return MeshError.badRequest(message)
    if (isConnectionError(err)) {
      return MeshError.backendUnavailable(`cannot reach Ollama at ${this.host}: ${detailOf(err)}`, err)
    }
    return MeshError.backendUnavailable(`Ollama: ${message}`, err)
  }
}
