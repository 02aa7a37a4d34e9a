/**
 * Which of the gateway's HTTP dialects a path belongs to, where its caller's key is, and how
 * its errors look: Ollama's (`/`, `/api/*`), Anthropic's Messages (`/v1/messages…`), OpenAI's
 * Responses (`/v1/responses…`) and OpenAI's other endpoints (the rest of `/v1/`).
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { MeshError } from '../../kernel/errors.js'
import { sendAnthropicError } from './anthropic/errors.js'
import { isAnthropicPath } from './anthropic-api.js'
import { type HttpApi, noteFailure } from './observed.js'
import { sendOpenAIError } from './openai/errors.js'
import { sendJson } from './plumbing.js'
import { isResponsesPath } from './responses-api.js'

/** The dialect of a request's path; it also labels the request in the metrics. */
export function apiOf(path: string | null): HttpApi {
  if (path === null || !path.startsWith('/v1/')) return 'ollama'
  if (isAnthropicPath(path)) return 'anthropic'
  if (isResponsesPath(path)) return 'responses'
  return 'openai'
}

function bearer(req: IncomingMessage): string | undefined {
  const h = req.headers.authorization
  if (!h) return undefined
  const m = /^Bearer\s+(.+)$/i.exec(h.trim())
  return m ? (m[1] as string).trim() : h.trim()
}

/**
 * The caller's credential: `Authorization: Bearer <key>`, or on Anthropic's paths also
 * `x-api-key: <key>` (what Anthropic's clients send), which wins when both are there.
 */
export function credentialOf(req: IncomingMessage, api: HttpApi): string | undefined {
  if (api === 'anthropic') {
    const key = req.headers['x-api-key']
    if (typeof key === 'string' && key.trim() !== '') return key.trim()
  }
  return bearer(req)
}

/** Answers `err` in the dialect's own error shape (Ollama's is `{"error": "…"}`). */
export function sendApiError(
  api: HttpApi,
  res: ServerResponse,
  e: MeshError,
  headers: Record<string, string> = {},
): void {
  if (api === 'anthropic') sendAnthropicError(res, e, headers)
  else if (api === 'openai' || api === 'responses') sendOpenAIError(res, e, headers)
  else {
    noteFailure(res, e)
    sendJson(res, e.httpStatus, { error: e.reason }, headers)
  }
}
