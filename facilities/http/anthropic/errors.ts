/** Anthropic's error objects, with their statuses. */
import type { ServerResponse } from 'node:http'
import { MeshError } from '../../../kernel/errors.js'
import { errorSender, retryAfterHeaders, sendJson } from '../plumbing.js'

/** Anthropic's error type of each status we answer; other 5xx are `api_error`. */
const ERROR_TYPES: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  403: 'permission_error',
  404: 'not_found_error',
  405: 'invalid_request_error',
  409: 'invalid_request_error',
  413: 'request_too_large',
  429: 'rate_limit_error',
  503: 'overloaded_error',
  504: 'timeout_error',
}

/** The body of Anthropic's error object: `{type: 'error', error: {type, message}}`. */
export function anthropicErrorBody(status: number, message: string) {
  const type = ERROR_TYPES[status] ?? (status >= 500 ? 'api_error' : 'invalid_request_error')
  return { type: 'error', error: { type, message } }
}

/**
 * Anthropic's error object for any error, with its status and Retry-After when it has one.
 * Anthropic's errors name no parameter: the message does (`tools[0].type …`).
 */
export function anthropicError(err: unknown): {
  status: number
  body: ReturnType<typeof anthropicErrorBody>
  headers: Record<string, string>
} {
  const e = MeshError.from(err)
  return {
    status: e.httpStatus,
    body: anthropicErrorBody(e.httpStatus, e.reason),
    headers: retryAfterHeaders(e),
  }
}

/** Answers `err` as Anthropic's error object (unless the response is already under way). */
export const sendAnthropicError = errorSender(anthropicError)

/** 405 in Anthropic's error shape. */
export function notAllowed(res: ServerResponse, allow: string): void {
  sendJson(res, 405, anthropicErrorBody(405, `${res.req.method} is not allowed here`), { Allow: allow })
}
