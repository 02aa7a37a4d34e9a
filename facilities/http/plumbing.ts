import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { z } from 'zod'
import { CancelToken } from '../../kernel/cancel.js'
import { MeshError } from '../../kernel/errors.js'
import { errorMessage, isRecord } from '../../kernel/util.js'
import type { InferenceSource } from '../../kernel/wire.js'
import { noteFailure } from './observed.js'

/** HTTP plumbing shared by the Ollama and OpenAI route layers. */

/**
 * A request body through its schema; on the first problem, `refuse(path, message)` makes the
 * dialect's own error (dotted path, '' for the body itself).
 */
export function parseWith<S extends z.ZodType>(
  schema: S,
  body: Record<string, unknown>,
  refuse: (path: string, message: string) => MeshError,
): z.output<S> {
  const result = schema.safeParse(body)
  if (result.success) return result.data
  const issue = result.error.issues[0]
  throw refuse(issue?.path.map(String).join('.') ?? '', issue?.message ?? 'invalid request')
}

/**
 * A body, or the part of one found at `where` (`messages[2].content[0]`), through its schema;
 * the first problem is a 400 naming its path in the message and `details.param`.
 * @throws ERR_BAD_REQUEST
 */
export function parseAt<S extends z.ZodType>(
  schema: S,
  body: Record<string, unknown>,
  where = '',
): z.output<S> {
  return parseWith(schema, body, (path, message) => {
    const param = [where, path].filter((p) => p !== '').join('.')
    return param ? MeshError.badRequest(`${param}: ${message}`, { param }) : MeshError.badRequest(message, {})
  })
}

export const JSON_TYPE = 'application/json; charset=utf-8'

/**
 * `Retry-After` (whole seconds, at least 1) for a 429 or 503 whose error says
 * when to come back (`details.retryAfterMs`); no headers otherwise.
 */
export function retryAfterHeaders(e: MeshError): Record<string, string> {
  const retryAfterMs = e.details?.retryAfterMs
  if ((e.httpStatus !== 429 && e.httpStatus !== 503) || typeof retryAfterMs !== 'number') return {}
  if (!Number.isFinite(retryAfterMs)) return {}
  return { 'Retry-After': String(Math.max(1, Math.ceil(retryAfterMs / 1000))) }
}

/** What the routes of a `/v1/` dialect (OpenAI's, Anthropic's, the Responses API's) take. */
export interface DialectRoutesOptions {
  /** Largest request body accepted; larger ones get 413. */
  maxBodyBytes?: number
  /**
   * Id of the answer to `res`, which the dialect prefixes (`chatcmpl-<id>`, `msg_<id>`,
   * `resp_<id>`); default a random one per request.
   */
  requestId?: (res: ServerResponse) => string
}

/** Answers one request whose `path` (parsed once by the caller: `pathOf`) is the dialect's. */
export type DialectRoutes = (
  req: IncomingMessage,
  res: ServerResponse,
  source: InferenceSource,
  path: string,
) => Promise<void>

/** Whether `path` is `base` or below it (`base/…`). */
export const isAtOrBelow = (path: string, base: string): boolean =>
  path === base || path.startsWith(`${base}/`)

/** The default `requestId`: a random one per request. */
export const randomRequestId = (): string => Math.random().toString(36).slice(2, 14)

/** The default `maxBodyBytes` of a `/v1/` dialect. */
export const DEFAULT_DIALECT_MAX_BODY_BYTES = 8 * 1024 * 1024

/** A dialect's error reply: its status, body and headers (Retry-After when it has one). */
export interface ErrorReply {
  status: number
  body: unknown
  headers: Record<string, string>
}

/** Answers an error in a dialect's shape (unless the response is already under way). */
export type ErrorSender = (res: ServerResponse, err: unknown, extraHeaders?: Record<string, string>) => void

/**
 * The sender of a dialect's error replies (`reply` makes one from any error): it notes the
 * failure, and sends nothing once the response is under way.
 */
export function errorSender(reply: (err: unknown) => ErrorReply): ErrorSender {
  return (res, err, extraHeaders = {}) => {
    noteFailure(res, err)
    if (res.headersSent || res.destroyed) return
    const { status, body, headers } = reply(err)
    sendJson(res, status, body, { ...headers, ...extraHeaders })
  }
}

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body)
  res.writeHead(status, {
    'Content-Type': JSON_TYPE,
    'Content-Length': String(Buffer.byteLength(text)),
    ...headers,
  })
  res.end(text)
}

/**
 * The request body, stopping at `limit` bytes: a declared Content-Length over
 * the limit is refused before reading, a chunked body as soon as it crosses it.
 * @throws ERR_PAYLOAD_TOO_LARGE; ERR_CANCELLED when the client goes away mid-body
 */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'])
  if (Number.isFinite(declared) && declared > limit) {
    return Promise.reject(MeshError.payloadTooLarge('request body', declared, limit))
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    const cleanup = () => {
      req.off('data', onData)
      req.off('end', onEnd)
      req.off('error', onError)
      req.off('close', onClose)
    }
    const onData = (chunk: Buffer) => {
      size += chunk.length
      if (size > limit) {
        cleanup()
        req.pause()
        reject(MeshError.payloadTooLarge('request body', size, limit))
        return
      }
      chunks.push(chunk)
    }
    const onEnd = () => {
      cleanup()
      // A small body comes in one chunk: no copy.
      resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size))
    }
    const onError = (err: Error) => {
      cleanup()
      reject(new MeshError('ERR_BAD_REQUEST', `cannot read the request body: ${err.message}`))
    }
    const onClose = () => {
      cleanup()
      reject(MeshError.cancelled('client closed the connection'))
    }
    req.on('data', onData)
    req.on('end', onEnd)
    req.on('error', onError)
    req.on('close', onClose)
  })
}

/** @throws ERR_BAD_REQUEST for an empty or non-JSON body, or JSON that is not an object */
function parseJsonObject(raw: Buffer): Record<string, unknown> {
  if (raw.length === 0) throw MeshError.badRequest('missing request body')
  let body: unknown
  try {
    body = JSON.parse(raw.toString('utf8'))
  } catch (err) {
    throw MeshError.badRequest(`invalid JSON body: ${errorMessage(err)}`)
  }
  if (!isRecord(body)) throw MeshError.badRequest('request body must be a JSON object')
  return body
}

const PLAIN_PATH = /^\/(?!\/)[\w\-/]*$/

/** The path of a request's URL (`/api/chat` of `/api/chat?x=1`); null when the URL cannot be parsed. */
export function pathOf(req: IncomingMessage): string | null {
  const url = req.url ?? '/'
  const query = url.indexOf('?')
  const path = query < 0 ? url : url.slice(0, query)
  // Letters, digits, '_', '-' and single-slash-led segments parse to themselves: no URL object
  // on every request's path. Anything else (dots, '%', '//', '#') goes through the WHATWG parser.
  if (PLAIN_PATH.test(path)) return path
  try {
    return new URL(url, 'http://localhost').pathname
  } catch {
    return null
  }
}

/** A request's method, HEAD answered as GET. */
export function methodOf(req: IncomingMessage): string | undefined {
  return req.method === 'HEAD' ? 'GET' : req.method
}

/** One request as a route handler sees it. */
export interface Exchange {
  req: IncomingMessage
  res: ServerResponse
  /** The request's method, HEAD answered as GET. */
  method: string | undefined
  /** Aborts when the client goes away before the response is finished. */
  cancel: CancelToken
  /** What serves this request (a gateway passes the mesh as seen by the caller). */
  source: InferenceSource
  /** The JSON object body, read up to the layer's limit. @throws ERR_PAYLOAD_TOO_LARGE, ERR_BAD_REQUEST */
  body(): Promise<Record<string, unknown>>
}

/**
 * Runs one route handler, the same way for both APIs: a write to a connection
 * that just closed does not crash the server; the client leaving aborts
 * `cancel`; an error becomes the API's error reply (`replyError`), a 413 with
 * `Connection: close` so the rest of the upload is never read; once headers
 * are out, an error cuts the connection; after the client left, nothing is
 * sent.
 */
export async function serveRequest(
  req: IncomingMessage,
  res: ServerResponse,
  maxBodyBytes: number,
  source: InferenceSource,
  handle: (x: Exchange) => Promise<void>,
  replyError: (res: ServerResponse, err: unknown, headers?: Record<string, string>) => void,
): Promise<void> {
  res.on('error', () => {})
  // Only the response's 'close' means the client left: since Node 16 the request's
  // 'close' also fires once its body has been read.
  const cancel = new CancelToken()
  res.once('close', () => {
    if (!res.writableFinished) cancel.abort()
  })
  try {
    await handle({
      req,
      res,
      method: methodOf(req),
      cancel,
      source,
      body: async () => parseJsonObject(await readBody(req, maxBodyBytes)),
    })
  } catch (err) {
    if (cancel.aborted) return
    noteFailure(res, err)
    if (res.headersSent) res.destroy()
    else if (err instanceof MeshError && err.code === 'ERR_PAYLOAD_TOO_LARGE') {
      replyError(res, err, { Connection: 'close' })
    } else replyError(res, err)
  }
}

/** Binds `server` to host:port; resolves with the bound port. @throws ERR_UNAVAILABLE */
export function listenOn(server: Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => {
      reject(new MeshError('ERR_UNAVAILABLE', `cannot listen on ${host}:${port}: ${err.message}`))
    }
    server.once('error', onError)
    server.listen(port, host, () => {
      server.off('error', onError)
      const addr = server.address()
      resolve(typeof addr === 'object' && addr !== null ? addr.port : port)
    })
  })
}

/** `http://host:port`, an IPv6 host in brackets. */
export function baseUrl(host: string, port: number): string {
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}`
}

/** Stops listening and cuts open connections; resolves once the server is closed. */
export function closeServer(server: Server): Promise<void> {
  return new Promise<void>((resolve) => {
    if (!server.listening) return resolve()
    server.close(() => resolve())
    server.closeAllConnections()
  })
}

/**
 * A `/v1/` dialect's routes: each request served (`serveRequest`) by `handle`, given its path
 * and the answer's id (`requestId`, asked for when called); a failure answered by `sendError`.
 */
export function dialectRoutes(
  opts: DialectRoutesOptions,
  sendError: ErrorSender,
  handle: (x: Exchange, path: string, requestId: () => string) => Promise<void>,
): DialectRoutes {
  const { maxBodyBytes = DEFAULT_DIALECT_MAX_BODY_BYTES, requestId = randomRequestId } = opts
  return (req, res, source, path) =>
    serveRequest(req, res, maxBodyBytes, source, (x) => handle(x, path, () => requestId(res)), sendError)
}
