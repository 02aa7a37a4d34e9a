/**
 * Ollama-compatible HTTP API over any InferenceSource: a processor's backend
 * today, the whole mesh when a gateway mounts the same routes. Shapes follow
 * Ollama's docs/api.md so existing Ollama clients work unchanged.
 *
 * Tools, `format`, `think`, `logprobs`/`top_logprobs` and the tool calls,
 * tool results and reasoning of replayed turns go to the source as the wire's;
 * the answer's tool calls, reasoning and log probabilities come back as Ollama
 * writes them. A source that cannot honour one of them refuses it (ERR_UNSUPPORTED).
 *
 * Request fields we cannot honour follow one rule: a field is ignored when
 * ignoring it cannot change the kind of answer the client gets — resource hints
 * (`keep_alive`), the deprecated `context`, unknown option names, and features
 * left unset (null, false, "" or []). A feature that is asked for (`images`,
 * `suffix`, `template`, `dimensions`, the debug `_debug_render_only`) is a 400
 * naming the field, never silently dropped; Ollama itself answers 400 when a
 * model lacks the capability.
 *
 * Model names are served as the source names them (no `:latest` appended), so a
 * name read from /api/tags is the same name the mesh routes by. Generate
 * replies carry no `context` (token memory is the source's business).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { MeshError } from '../../kernel/errors.js'
import type { InferenceSource } from '../../kernel/wire.js'
import type { PullRegistry } from './ollama/pull.js'
import { sendError, sendNotFound } from './ollama/replies.js'
import { createRouteTable } from './ollama/routes.js'
import type { Exchange } from './plumbing.js'
import { baseUrl, closeServer, listenOn, methodOf, pathOf, sendJson, serveRequest } from './plumbing.js'

export const DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
/** What /api/version reports unless told otherwise: a recent Ollama, so clients enable their usual features. */
export const DEFAULT_OLLAMA_VERSION = '0.6.4'
const DEFAULT_HOST = '127.0.0.1'

export interface OllamaRoutesOptions {
  /** What /api/version reports. */
  version?: string
  /** Largest request body accepted; larger ones get 413. Default 8 MiB. */
  maxBodyBytes?: number
  /**
   * Sees each request body as it was read, before it is served: how tests check what a client
   * (or the Ollama backend) sent. It changes nothing of the answer.
   */
  onRequest?: (path: string, body: Record<string, unknown>) => void
  /**
   * Where `/api/pull` fetches a model from when the request names no `source` (the sources
   * that need one, llama.cpp's): model name → URL. A name it does not know is Ollama's 404.
   */
  pullRegistry?: PullRegistry
}

/** `handler` with its body shown to `onRequest` first. */
function observed(
  handler: (x: Exchange) => Promise<void>,
  path: string,
  onRequest: NonNullable<OllamaRoutesOptions['onRequest']>,
): (x: Exchange) => Promise<void> {
  return (x) =>
    handler({
      ...x,
      body: async () => {
        const body = await x.body()
        onRequest(path, body)
        return body
      },
    })
}

/**
 * Answers one request whose `path` (the request's, parsed once by the caller:
 * `pathOf`) is not under `/v1/`; an unknown path gets Ollama's 404. `source`
 * serves this one request (a gateway passes the mesh as seen by the caller).
 */
export type OllamaRoutes = (
  req: IncomingMessage,
  res: ServerResponse,
  source: InferenceSource,
  path: string,
) => Promise<void>

/**
 * The Ollama routes over `source`, for mounting in any node:http server. Never
 * rejects: every failure becomes an Ollama-style `{"error"}` reply (400 bad
 * input, 404 unknown model, 405 wrong method, 413 body over `maxBodyBytes`,
 * a MeshError's own status otherwise, 429 with Retry-After). A client that
 * disconnects aborts its generation through the CancelToken given to the source.
 *
 * @throws ERR_BAD_CONFIG (synchronously) for a bad `maxBodyBytes`
 */
export function createOllamaRoutes(opts: OllamaRoutesOptions = {}): OllamaRoutes {
  const { version = DEFAULT_OLLAMA_VERSION, maxBodyBytes = DEFAULT_MAX_BODY_BYTES, onRequest } = opts
  if (!Number.isSafeInteger(maxBodyBytes) || maxBodyBytes < 1) {
    throw MeshError.badConfig('maxBodyBytes must be a positive integer')
  }
  const routes = createRouteTable(version, opts.pullRegistry)

  return async (req, res, source, path) => {
    const route = routes.get(path)
    if (!route) return sendNotFound(res)
    const method = methodOf(req)
    const handler = method === 'GET' || method === 'POST' || method === 'DELETE' ? route[method] : undefined
    if (!handler) {
      const allow = route.GET ? 'GET, HEAD' : route.DELETE ? 'DELETE' : 'POST'
      sendJson(res, 405, { error: '405 method not allowed' }, { Allow: allow })
      return
    }
    const serve = onRequest ? observed(handler, path, onRequest) : handler
    await serveRequest(req, res, maxBodyBytes, source, serve, sendError)
  }
}

// ---------------------------------------------------------------- server

export interface OllamaCompatServerOptions extends OllamaRoutesOptions {
  source: InferenceSource
  /** Interface to bind. Default 127.0.0.1. */
  host?: string
  /** Default 0: any free port (read it from `url`). */
  port?: number
}

/** A standalone Ollama-compatible server over one source (used by processors' tests and local setups). */
export class OllamaCompatServer {
  private readonly host: string
  private readonly port: number
  private readonly routes: OllamaRoutes
  private readonly server: Server
  private bound: number | null = null
  private closing: Promise<void> | null = null

  /** @throws ERR_BAD_CONFIG for a bad port or maxBodyBytes */
  constructor(opts: OllamaCompatServerOptions) {
    const { source, host = DEFAULT_HOST, port = 0, version, maxBodyBytes, onRequest, pullRegistry } = opts
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw MeshError.badConfig('port must be an integer from 0 to 65535')
    }
    this.host = host
    this.port = port
    this.routes = createOllamaRoutes({
      ...(version !== undefined ? { version } : {}),
      ...(maxBodyBytes !== undefined ? { maxBodyBytes } : {}),
      ...(onRequest ? { onRequest } : {}),
      ...(pullRegistry ? { pullRegistry } : {}),
    })
    this.server = createServer((req, res) => {
      const path = pathOf(req)
      if (path === null) return sendNotFound(res)
      this.routes(req, res, source, path).catch((err: unknown) => {
        if (res.headersSent) res.destroy()
        else sendError(res, err)
      })
    })
  }

  /** Binds host:port. @throws ERR_UNAVAILABLE when the address cannot be bound or the server was closed */
  async listen(): Promise<void> {
    if (this.closing) throw new MeshError('ERR_UNAVAILABLE', 'server is closed')
    if (this.bound !== null) return
    const port = await listenOn(this.server, this.host, this.port)
    // Closed while binding: the close found nothing listening, so stop what just started.
    if (this.closing) {
      await closeServer(this.server)
      throw new MeshError('ERR_UNAVAILABLE', 'server is closed')
    }
    this.bound = port
  }

  /** Base URL, e.g. http://127.0.0.1:41234. @throws ERR_UNAVAILABLE before `listen()` resolved */
  get url(): string {
    if (this.bound === null) throw new MeshError('ERR_UNAVAILABLE', 'server is not listening')
    return baseUrl(this.host, this.bound)
  }

  /** Stops listening and cuts open connections (aborting their generations). Safe to call twice. */
  close(): Promise<void> {
    this.closing ??= closeServer(this.server)
    return this.closing
  }
}
