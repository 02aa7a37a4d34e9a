import {
  createServer,
  type IncomingMessage,
  type OutgoingHttpHeader,
  type OutgoingHttpHeaders,
  type Server,
  type ServerResponse,
} from 'node:http'
import type { Socket } from 'node:net'
import { MeshError } from '../../kernel/errors.js'
import { formatTiming } from '../../kernel/trace.js'
import { idSequence } from '../../kernel/util.js'
import type { Health, InferenceSource } from '../../kernel/wire.js'
import type { Identity } from '../auth/auth.facility.js'
import { Facility } from '../facility.js'
import type { Logger } from '../log.facility.js'
import type { RequestTrace, Tracer } from '../tracing/request-trace.js'
import { createAnthropicRoutes } from './anthropic-api.js'
import { Cors } from './cors.js'
import { apiOf, credentialOf, sendApiError } from './dialects.js'
import { PROBE_PATHS, serveProbe } from './health-routes.js'
import { type HttpApi, type HttpMetrics, ObservedResponse, outcomeOf } from './observed.js'
import { sendNotFound } from './ollama/replies.js'
import { createOllamaRoutes, DEFAULT_OLLAMA_VERSION } from './ollama-api.js'
import { createOpenAIRoutes } from './openai-api.js'
import { baseUrl, closeServer, listenOn, methodOf, pathOf, retryAfterHeaders, sendJson } from './plumbing.js'
import { createResponsesRoutes } from './responses-api.js'

/** Open connections at most, unless configured (`http.maxConnections`). */
export const DEFAULT_MAX_CONNECTIONS = 1024
/**
 * Connections over the cap that may wait at once for their 503; past that node drops new
 * ones unanswered. A refusal needs the request read first (its path picks the API's error
 * format, and a reply sent before it would be cut by a reset when the request arrives).
 */
const MAX_REFUSING = 64
/** How long a refused connection may take to send its request before it is cut. */
const REFUSED_IDLE_MS = 5_000
/** When a refused client may try again. */
const REFUSED_RETRY_MS = 1_000

/** What the gateway's HTTP layer learns about one request's path through the mesh. */
export interface RequestTiming {
  /** performance.now() when the request arrived. */
  arrived: number
  /** When it was first handed to a processor. */
  dispatched?: number
  /** When the processor's answer came back (unary answers). */
  answered?: number
}

export interface HttpFacilityOptions {
  host: string
  port: number
  maxBodyBytes: number
  /** Open connections at most (default DEFAULT_MAX_CONNECTIONS); past it: 503, ERR_BUSY. */
  maxConnections?: number
  logger: Logger
  /**
   * Who a bearer credential belongs to; null when the gateway has no accounts.
   * @throws ERR_AUTH_REQUIRED, ERR_AUTH_INVALID
   */
  authenticate(token: string | undefined): Identity | null
  /** The mesh as seen by this caller, reporting its path through `timing` (and `trace`, when traced). */
  sourceFor(
    identity: Identity | null,
    timing: RequestTiming,
    trace: RequestTrace | undefined,
  ): InferenceSource
  /** Request ids taken or made per request, and hop timing (`tracing.enabled`); none: ids are a counter. */
  tracer?: Tracer | null
  /** Where requests are counted, and `GET /metrics` served from; none: neither. */
  metrics?: HttpMetrics | null
  /** What `GET /healthz` and `GET /readyz` answer; none: no probes (404). */
  health?: (() => Promise<Health>) | null
  /** Origins whose pages may call the APIs from a browser (`http.corsOrigins`); none: no CORS. */
  cors?: Cors | null
}

/** The gateway's own time on a request so far, in ms: before dispatch, and after a whole answer came back. */
function overheadMs(timing: RequestTiming): string {
  const now = performance.now()
  const before = (timing.dispatched ?? now) - timing.arrived
  const after = timing.answered === undefined ? 0 : now - timing.answered
  return (before + after).toFixed(3)
}

/** Named in the head of a streamed answer: its timing comes after the body. */
const TIMING_TRAILER = 'X-LLM-Mesh-Timing'
const TIMING_TRAILERS = 'X-LLM-Mesh-Timing, Server-Timing'

/**
 * A response that adds the gateway's two headers as its head is written,
 * wherever that happens (a route's writeHead, an implicit head, an error
 * reply): `X-Request-Id`, and `X-LLM-Mesh-Overhead-Ms` from the request's
 * timing. They join the head's own header object: a `setHeader` before it
 * would move every header of every response onto node:http's slower merging
 * path.
 */
class MeshResponse<Request extends IncomingMessage = IncomingMessage> extends ObservedResponse<Request> {
  requestId = ''
  timing: RequestTiming | null = null
  /** The API it counts under; null: not counted (the scrape itself). */
  api: HttpApi | null = null
  /** The request's trace (tracing on): its timing goes in the head, or for a stream in trailers. */
  trace: RequestTrace | undefined = undefined
  /** Whether the head announced the timing trailers. */
  private trailing = false
  /** The caller's origin when CORS allows it: the head says so. */
  corsOrigin: string | null = null

  override writeHead(
    statusCode: number,
    statusMessage?: string,
    headers?: OutgoingHttpHeaders | OutgoingHttpHeader[],
  ): this
  override writeHead(statusCode: number, headers?: OutgoingHttpHeaders | OutgoingHttpHeader[]): this
  override writeHead(
    statusCode: number,
    messageOrHeaders?: string | OutgoingHttpHeaders | OutgoingHttpHeader[],
    headersAfterMessage?: OutgoingHttpHeaders | OutgoingHttpHeader[],
  ): this {
    const message = typeof messageOrHeaders === 'string' ? messageOrHeaders : undefined
    const headers = typeof messageOrHeaders === 'string' ? headersAfterMessage : messageOrHeaders
    // Replies node:http makes itself before the handler runs (a 417 for an unknown `Expect`)
    // have no request id yet: they get neither header.
    if (!this.requestId) return super.writeHead(statusCode, message, headers)
    const own: OutgoingHttpHeaders = { 'X-Request-Id': this.requestId }
    if (this.timing) own['X-LLM-Mesh-Overhead-Ms'] = overheadMs(this.timing)
    if (this.trace?.started) this.timingHeaders(own, statusCode)
    if (this.corsOrigin !== null) Object.assign(own, Cors.headers(this.corsOrigin))
    if (headers === undefined || Array.isArray(headers)) {
      for (const [name, value] of Object.entries(own)) if (value !== undefined) this.setHeader(name, value)
      return super.writeHead(statusCode, message, headers)
    }
    return super.writeHead(statusCode, message, { ...headers, ...own })
  }

  /**
   * An inference's timing: in the head when its answer is known (given whole, or failed), else
   * (a stream starting) announced as trailers, when the response is chunked (HTTP/1.1).
   */
  private timingHeaders(own: OutgoingHttpHeaders, statusCode: number): void {
    const trace = this.trace as RequestTrace
    const final = trace.final
    if (final) {
      const value = formatTiming(final)
      own['X-LLM-Mesh-Timing'] = value
      if (trace.serverTiming) own['Server-Timing'] = value
    } else if (statusCode === 200 && this.useChunkedEncodingByDefault) {
      own.Trailer = trace.serverTiming ? TIMING_TRAILERS : TIMING_TRAILER
      this.trailing = true
    }
  }

  /** Ends the response, with a stream's timing trailers when they were announced. */
  override end(chunk?: unknown, encoding?: unknown, cb?: unknown): this {
    const trace = this.trailing ? this.trace : undefined
    if (trace?.final && !this.writableEnded) {
      const value = formatTiming(trace.final)
      this.addTrailers(
        trace.serverTiming
          ? { 'X-LLM-Mesh-Timing': value, 'Server-Timing': value }
          : { 'X-LLM-Mesh-Timing': value },
      )
    }
    return (super.end as (c: unknown, e: unknown, f: unknown) => this)(chunk, encoding, cb)
  }
}

/** Paths any client may read without a key: Ollama clients probe them to see a server is up. */
const OPEN_PATHS = new Set(['/', '/api/version'])

/**
 * The gateway's HTTP front: Ollama's API (`/`, `/api/*`), Anthropic's Messages
 * (`/v1/messages`), OpenAI's Responses (`/v1/responses`) and OpenAI's other
 * endpoints (`/v1/*`) over the mesh, on one port. Every request but the two
 * health probes needs `Authorization: Bearer <API key or access token>` (on
 * Anthropic's paths `x-api-key: <key>` too), and then goes through the
 * same limits, routing and ledger as an RPC request. Every response carries
 * `X-Request-Id` and `X-LLM-Mesh-Overhead-Ms`: the time the request spent in
 * the gateway itself (before it reached a processor, and for an answer given
 * whole, after it came back), not in the network or the model.
 */
export class HttpFacility extends Facility {
  readonly name = 'http'
  private readonly opts: HttpFacilityOptions
  private readonly log: Logger
  private readonly ollama: ReturnType<typeof createOllamaRoutes>
  private readonly openai: ReturnType<typeof createOpenAIRoutes>
  private readonly anthropic: ReturnType<typeof createAnthropicRoutes>
  private readonly responses: ReturnType<typeof createResponsesRoutes>
  private readonly nextId = idSequence(4)
  private server: Server | null = null
  private bound: number | null = null
  private readonly maxConnections: number
  /** Connections admitted and still open. */
  private open = 0
  /** Connections that came over the cap: their one request is answered 503. */
  private readonly refused = new WeakSet<Socket>()
  private refusedCount = 0
  private refusedLoggedAt = 0
  /** Requests being answered (a stopping gateway waits for them). */
  private answering = 0
  private stopping = false

  constructor(opts: HttpFacilityOptions) {
    super()
    const { maxConnections = DEFAULT_MAX_CONNECTIONS } = opts
    this.opts = opts
    this.maxConnections = maxConnections
    this.log = opts.logger
    this.ollama = createOllamaRoutes({ version: DEFAULT_OLLAMA_VERSION, maxBodyBytes: opts.maxBodyBytes })
    // The answer's id is the request's: `chatcmpl-<X-Request-Id>`, `msg_<…>`, `resp_<…>`.
    const dialect = {
      maxBodyBytes: opts.maxBodyBytes,
      requestId: (res: ServerResponse) => (res instanceof MeshResponse ? res.requestId : this.id()),
    }
    this.openai = createOpenAIRoutes(dialect)
    this.anthropic = createAnthropicRoutes(dialect)
    this.responses = createResponsesRoutes(dialect)
  }

  /** Base URL, e.g. http://127.0.0.1:11435. @throws ERR_UNAVAILABLE before it listens */
  get url(): string {
    if (this.bound === null) throw new MeshError('ERR_UNAVAILABLE', 'http is not listening')
    return baseUrl(this.opts.host, this.bound)
  }

  private id(): string {
    return this.nextId()
  }

  protected override async _open(): Promise<void> {
    const server = createServer({ ServerResponse: MeshResponse }, (req, res) => {
      this.answering++
      res.once('close', () => {
        this.answering--
        this.observe(res)
      })
      this.handle(req, res).catch((err) => {
        this.log.error({ err }, 'http handler failed')
        if (!res.headersSent) sendJson(res, 500, { error: 'internal error' })
        else res.destroy()
      })
    })
    server.on('connection', (socket: Socket) => this.admit(socket))
    server.maxConnections = this.maxConnections + MAX_REFUSING
    server.keepAliveTimeout = 65_000
    this.bound = await listenOn(server, this.opts.host, this.opts.port)
    this.server = server
    this.log.info({ url: this.url }, 'http: Ollama, OpenAI and Anthropic APIs')
  }

  protected override async _close(): Promise<void> {
    const server = this.server
    this.server = null
    if (!server) return
    // Open streams end now; their generations are cancelled through the response's close.
    await closeServer(server)
  }

  override get openRequests(): number {
    return this.answering
  }

  /**
   * The gateway is stopping: requests that arrive from now on are answered 503 and their
   * connections closed; idle keep-alive connections close now; running answers finish.
   */
  override stopAccepting(): void {
    this.stopping = true
    this.server?.closeIdleConnections()
  }

  /** Counts an answered request in the metrics. */
  private observe(res: MeshResponse): void {
    const { metrics } = this.opts
    if (!metrics || res.api === null || res.timing === null) return
    const { arrived } = res.timing
    const now = performance.now()
    metrics.request(res.api, outcomeOf(res), (now - arrived) / 1000)
    if (res.firstTokenAt > 0) metrics.firstToken(res.api, (res.firstTokenAt - arrived) / 1000)
    // The gateway's own time: to the first hand-off to a processor, and after its answer came back.
    const { dispatched, answered } = res.timing
    if (dispatched !== undefined && answered !== undefined)
      metrics.overhead(res.api, (dispatched - arrived + now - answered) / 1000)
  }

  /** `GET /metrics`: the scrape, open like the health probes. */
  private async scrape(req: IncomingMessage, res: MeshResponse, metrics: HttpMetrics): Promise<void> {
    if (methodOf(req) !== 'GET') return sendJson(res, 405, { error: 'method not allowed' }, { Allow: 'GET' })
    const text = await metrics.text()
    res.writeHead(200, { 'Content-Type': metrics.contentType, 'Content-Length': Buffer.byteLength(text) })
    res.end(text)
  }

  /** Counts a new connection in, or marks it refused when `maxConnections` are open. */
  private admit(socket: Socket): void {
    if (this.open >= this.maxConnections) {
      this.refused.add(socket)
      socket.setTimeout(REFUSED_IDLE_MS, () => socket.destroy())
      this.noteRefused()
      return
    }
    this.open++
    socket.once('close', () => {
      this.open--
    })
    // Streamed chunks go out as they are written, not after Nagle's delay.
    socket.setNoDelay(true)
  }

  /** One log line per 10 s at most about refused connections. */
  private noteRefused(): void {
    this.refusedCount++
    const now = Date.now()
    if (now - this.refusedLoggedAt < 10_000) return
    this.log.warn(
      { refused: this.refusedCount, maxConnections: this.maxConnections },
      'http: connections refused (http.maxConnections)',
    )
    this.refusedLoggedAt = now
    this.refusedCount = 0
  }

  private async handle(req: IncomingMessage, res: MeshResponse): Promise<void> {
    const timing: RequestTiming = { arrived: performance.now() }
    const trace = this.opts.tracer?.fromHeaders(req.headers, timing.arrived)
    res.requestId = trace ? trace.id : this.id()
    res.trace = trace
    res.timing = timing
    const path = pathOf(req)
    const api = apiOf(path)
    const { metrics, health } = this.opts
    const scrape = metrics != null && path === '/metrics'
    // Probes answer even while the gateway stops (ready: no) or refuses connections.
    if (health && path !== null && PROBE_PATHS.has(path)) return serveProbe(path, req, res, health)
    const { cors } = this.opts
    if (cors) {
      // A browser's preflight carries no key: answered before any is asked for.
      if (Cors.isPreflight(req)) return cors.preflight(req, res)
      res.corsOrigin = cors.allowed(req)
    }
    if (!scrape) res.api = api
    const refused = this.refused.has(req.socket)
    if (refused || this.stopping) {
      const e = refused
        ? new MeshError(
            'ERR_BUSY',
            `the server has ${this.maxConnections} connections open, its limit (http.maxConnections); retry later`,
            { retryAfterMs: REFUSED_RETRY_MS },
          )
        : new MeshError(
            'ERR_UNAVAILABLE',
            'the gateway is shutting down; retry on another gateway or later',
            {
              retryAfterMs: REFUSED_RETRY_MS,
            },
          )
      // The body, if any, is never read: close rather than drain it.
      const headers = { ...retryAfterHeaders(e), Connection: 'close' }
      return sendApiError(api, res, e, headers)
    }
    if (path === null) return sendNotFound(res)
    if (scrape && metrics) return this.scrape(req, res, metrics)

    let identity: Identity | null = null
    if (!OPEN_PATHS.has(path)) {
      try {
        identity = this.opts.authenticate(credentialOf(req, api))
      } catch (err) {
        res.setHeader('WWW-Authenticate', 'Bearer')
        // The body of an unauthenticated request is never read: close rather than drain it.
        res.setHeader('Connection', 'close')
        return sendApiError(api, res, MeshError.from(err))
      }
    }
    const source = this.opts.sourceFor(identity, timing, trace)
    if (api === 'anthropic') return this.anthropic(req, res, source, path)
    if (api === 'responses') return this.responses(req, res, source, path)
    if (api === 'openai') return this.openai(req, res, source, path)
    return this.ollama(req, res, source, path)
  }
}
