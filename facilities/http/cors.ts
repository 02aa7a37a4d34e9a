import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http'
import { MeshError } from '../../kernel/errors.js'
import { sendJson } from './plumbing.js'

/** Methods the APIs answer, named to a browser's preflight. */
const METHODS = 'GET, POST, DELETE, OPTIONS'
/** Headers a page may send beyond the simple ones: credentials, JSON bodies, tracing, SDK headers. */
const ALLOWED_HEADERS =
  'Authorization, Content-Type, X-Request-Id, traceparent, tracestate, x-api-key, anthropic-version, OpenAI-Organization, OpenAI-Project, x-stainless-arch, x-stainless-lang, x-stainless-os, x-stainless-package-version, x-stainless-retry-count, x-stainless-runtime, x-stainless-runtime-version, x-stainless-timeout'
/** Response headers a page's script may read. */
const EXPOSED = 'X-Request-Id, X-LLM-Mesh-Timing, X-LLM-Mesh-Overhead-Ms, Retry-After'
/** How long a browser may keep a preflight's answer. */
const MAX_AGE_SECONDS = '600'

/**
 * CORS for the gateway's HTTP APIs (`http.corsOrigins`): a web app served from an allowed origin
 * may call them with a key in `Authorization` (bearer, never cookies: no credentials mode).
 * Preflights (`OPTIONS` with `Access-Control-Request-Method`) are answered before any key is
 * asked for, as browsers send none on them; an origin not allowed gets 403 and no CORS headers.
 */
export class Cors {
  private readonly any: boolean
  private readonly origins: ReadonlySet<string>

  constructor(origins: readonly string[]) {
    this.any = origins.includes('*')
    this.origins = new Set(origins.map((o) => o.toLowerCase()))
  }

  /** The origin to allow for `req`: its `Origin` when allowed, else null (also with no `Origin`). */
  allowed(req: IncomingMessage): string | null {
    const origin = req.headers.origin
    if (origin === undefined) return null
    return this.any || this.origins.has(origin.toLowerCase()) ? origin : null
  }

  /** The headers an answer to an allowed origin carries. */
  static headers(origin: string): OutgoingHttpHeaders {
    return {
      'Access-Control-Allow-Origin': origin,
      'Access-Control-Expose-Headers': EXPOSED,
      Vary: 'Origin',
    }
  }

  /** Whether `req` is a CORS preflight. */
  static isPreflight(req: IncomingMessage): boolean {
    return req.method === 'OPTIONS' && req.headers['access-control-request-method'] !== undefined
  }

  /** Answers a preflight: 204 with what may be sent, or 403 (ERR_FORBIDDEN) for an origin not allowed. */
  preflight(req: IncomingMessage, res: ServerResponse): void {
    const origin = this.allowed(req)
    if (origin === null) {
      const e = new MeshError('ERR_FORBIDDEN', 'this origin may not call the gateway (http.corsOrigins)')
      sendJson(res, e.httpStatus, { error: e.reason, code: e.code })
      return
    }
    res.writeHead(204, {
      ...Cors.headers(origin),
      'Access-Control-Allow-Methods': METHODS,
      'Access-Control-Allow-Headers': ALLOWED_HEADERS,
      'Access-Control-Max-Age': MAX_AGE_SECONDS,
      'Content-Length': '0',
    })
    res.end()
  }
}
