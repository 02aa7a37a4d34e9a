/**
 * The `fetch` the `ollama` client is given: node:http over keep-alive
 * sockets, one agent per backend, each request bound to the call it belongs
 * to (cut short when the call stops; when it ends, a reply still arriving
 * may finish, within END_DRAIN_MS). Node's global fetch (undici)
 * spent ~20% of the backend's CPU per call, and merging the client's signal
 * with the call's cost an `AbortSignal.any` per fetch (bench/ollama-backend.ts).
 *
 * As fetch does: a failed connection rejects with TypeError('fetch failed')
 * whose cause is the socket's error; an abort rejects with an AbortError and,
 * after the headers, errors the body. Unlike fetch: the reply is the part of
 * a Response the client uses (incoming-response.ts), no redirects are
 * followed, no compression is asked for, and `input` must be a URL (the
 * `ollama` client passes strings).
 */
import http from 'node:http'
import https from 'node:https'
import { type FetchResponse, IncomingResponse } from './incoming-response.js'

/**
 * How long a reply may go on arriving after its call has ended, before its
 * socket is given up: a stream's terminating chunk can come in a packet of its
 * own after the done frame, and cutting it off would cost the socket.
 */
const END_DRAIN_MS = 1_000

/**
 * An idle socket is closed after this long, as Node's fetch (undici) does: a
 * server that closes it first (Node's HTTP server after 5 s, a proxy) could
 * race a request onto a dying socket. Sockets in use are not affected.
 */
const IDLE_SOCKET_MS = 4_000

/** What a fetch belongs to: a call that can stop, and that ends. */
export interface FetchScope {
  /** True once the call has stopped: a new fetch fails at once. */
  readonly stopped: boolean
  /** Runs `fn` once, when the call stops (`stopped` true) or ends, whichever comes first. */
  onRelease(fn: (stopped: boolean) => void): void
}

function abortError(): DOMException {
  return new DOMException('This operation was aborted', 'AbortError')
}

function fetchFailed(err: unknown): TypeError {
  return new TypeError('fetch failed', { cause: err })
}

function urlOf(input: string | URL | Request): URL {
  if (typeof input === 'string') return new URL(input)
  if (input instanceof URL) return input
  throw new TypeError('keepAliveFetch: a Request as input is not supported')
}

/** Headers as node:http takes them; the `ollama` client passes a plain object. */
function headersOf(init: RequestInit['headers']): Record<string, string> {
  if (init === undefined) return {}
  if (init instanceof Headers || Array.isArray(init)) return Object.fromEntries(new Headers(init))
  const headers: Record<string, string> = {}
  for (const [name, value] of Object.entries(init))
    headers[name] = typeof value === 'string' ? value : value.join(', ')
  return headers
}

function bodyOf(body: RequestInit['body']): string | Uint8Array | undefined {
  if (body === undefined || body === null) return undefined
  if (typeof body === 'string' || body instanceof Uint8Array) return body
  throw new TypeError('keepAliveFetch: only string and Uint8Array bodies are supported')
}

/** Lets an ended call's reply finish (its socket then goes back to the agent), or `stop` it after END_DRAIN_MS. */
function drain(response: http.IncomingMessage, stop: () => void): void {
  const timer = setTimeout(stop, END_DRAIN_MS)
  timer.unref()
  response.once('close', () => clearTimeout(timer))
}

/** A keep-alive `fetch` for one backend; `close()` destroys its sockets. */
export class KeepAliveFetch {
  private readonly httpAgent = new http.Agent({ keepAlive: true, timeout: IDLE_SOCKET_MS })
  private httpsAgent: https.Agent | null = null

  /** One request, stopped (or its body cut short) when `init.signal` fires or `scope` releases it. */
  fetch(
    input: string | URL | Request,
    init: RequestInit | undefined,
    scope: FetchScope,
  ): Promise<FetchResponse> {
    return new Promise((resolve, reject) => {
      const signal = init?.signal ?? null
      if (scope.stopped || signal?.aborted) {
        reject(abortError())
        return
      }
      const url = urlOf(input)
      const body = bodyOf(init?.body)
      const headers = headersOf(init?.headers)
      if (body !== undefined) headers['content-length'] = String(Buffer.byteLength(body))
      const secure = url.protocol === 'https:'
      const req = (secure ? https : http).request({
        agent: secure ? this.secureAgent() : this.httpAgent,
        protocol: url.protocol,
        // An IPv6 host comes bracketed in a URL; http.request wants it bare.
        hostname: url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname,
        port: url.port,
        path: url.pathname + url.search,
        method: init?.method ?? 'GET',
        headers,
        ...(url.username
          ? { auth: `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}` }
          : {}),
      })
      let settled = false
      let done = false
      let response: http.IncomingMessage | null = null
      const stop = () => {
        if (done) return
        done = true
        signal?.removeEventListener('abort', stop)
        // The body first, so its reader sees the AbortError (destroying the request alone drops the body's listeners).
        response?.destroy(abortError())
        req.destroy(abortError())
      }
      const finish = () => {
        done = true
        signal?.removeEventListener('abort', stop)
      }
      signal?.addEventListener('abort', stop, { once: true })
      scope.onRelease((stopped) => {
        if (done) return
        if (stopped || response === null) stop()
        else drain(response, stop)
      })
      req.on('error', (err) => {
        if (settled) return
        settled = true
        finish()
        reject(err instanceof DOMException ? err : fetchFailed(err))
      })
      req.once('response', (res) => {
        settled = true
        response = res
        // The body's stream reports its errors to its reader; this keeps a destroyed one from throwing.
        res.on('error', () => {})
        res.once('close', finish)
        try {
          resolve(new IncomingResponse(res))
        } catch (err) {
          stop()
          reject(fetchFailed(err))
        }
      })
      req.end(body)
    })
  }

  /** Destroys the sockets, idle and in use. Safe to call twice. */
  close(): void {
    this.httpAgent.destroy()
    this.httpsAgent?.destroy()
  }

  private secureAgent(): https.Agent {
    this.httpsAgent ??= new https.Agent({ keepAlive: true, timeout: IDLE_SOCKET_MS })
    return this.httpsAgent
  }
}
