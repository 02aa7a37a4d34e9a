/**
 * The `ollama` package's client, made the way this backend needs it: error
 * replies always JSON, every fetch bounded by its call.
 */
import { Ollama } from 'ollama'
import { MeshError } from '../../../kernel/errors.js'
import { errorMessage } from '../../../kernel/util.js'
import type { FetchResponse } from './incoming-response.js'
import type { FetchScope, KeepAliveFetch } from './keep-alive-fetch.js'

const DEFAULT_PROBE_TIMEOUT_MS = 1_000

/**
 * The client logs to the console when an error reply is not JSON (a proxy's or
 * another server's page); giving it the `{"error"}` body it expects keeps
 * stdout clean and the message intact.
 */
async function jsonErrors<R extends FetchResponse>(res: R): Promise<R | Response> {
  if (res.ok || res.headers.get('content-type')?.includes('application/json')) return res
  const text = (await res.text().catch(() => '')).trim()
  return new Response(JSON.stringify({ error: text || `${res.status} ${res.statusText}` }), {
    status: res.status,
    statusText: res.statusText,
    headers: { 'Content-Type': 'application/json' },
  })
}

/**
 * Checks that the client accepts `host` (it parses it the same way on every
 * request), so a bad host fails at construction, not on the first request.
 * @throws ERR_BAD_CONFIG
 */
export function checkHost(host: unknown): string {
  if (typeof host !== 'string' || host.trim() === '') throw MeshError.badConfig('host must be a URL')
  try {
    new Ollama({ host })
  } catch (err) {
    throw MeshError.badConfig(`host '${host}' is not a URL: ${errorMessage(err)}`)
  }
  return host
}

/**
 * A client for one call (a client costs ~1 µs; one per call keeps the client's
 * list of streams in progress, from which an unfinished stream is never
 * removed, from growing): its fetches go through the backend's keep-alive
 * `transport`, are cut short when `call` stops or ends, and restart the
 * call's progress timeout when response headers arrive.
 */
export function callClient(
  host: string,
  transport: KeepAliveFetch,
  call: FetchScope & { kick(): void },
): Ollama {
  return new Ollama({
    host,
    fetch: async (input, init) => {
      const res = await transport.fetch(input, init, call)
      call.kick()
      // All of Response the client uses (incoming-response.ts).
      return jsonErrors(res) as Promise<Response>
    },
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
