import type { IncomingMessage, ServerResponse } from 'node:http'
import { MeshError } from '../../workers/lib/errors.js'

/** HTTP plumbing shared by the Ollama and OpenAI route layers. */

export const JSON_TYPE = 'application/json; charset=utf-8'

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

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

export /**
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
      resolve(Buffer.concat(chunks, size))
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

export /** @throws ERR_BAD_REQUEST for an empty or non-JSON body, or JSON that is not an object */
function parseJsonObject(raw: Buffer): Record<string, unknown> {
  if (raw.length === 0) throw MeshError.badRequest('missing request body')
  let body: unknown
  try {
    body = JSON.parse(raw.toString('utf8'))
  } catch (err) {
    throw MeshError.badRequest(`invalid JSON body: ${err instanceof Error ? err.message : String(err)}`)
  }
  if (!isRecord(body)) throw MeshError.badRequest('request body must be a JSON object')
  return body
}
