/** OpenAI's error objects, with their statuses. */
import type { ServerResponse } from 'node:http'
import { MeshError } from '../../../kernel/errors.js'
import { errorSender, retryAfterHeaders, sendJson } from '../plumbing.js'

const ERROR_TYPES: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  403: 'permission_error',
  404: 'invalid_request_error',
  409: 'invalid_request_error',
  413: 'invalid_request_error',
  429: 'rate_limit_error',
}

const ERROR_CODES: Record<string, string> = {
  ERR_AUTH_INVALID: 'invalid_api_key',
  ERR_AUTH_REQUIRED: 'invalid_api_key',
  ERR_MODEL_NOT_FOUND: 'model_not_found',
  ERR_RATE_LIMITED: 'rate_limit_exceeded',
  ERR_QUOTA_EXCEEDED: 'insufficient_quota',
}

/** OpenAI's error object for any error, with its status and Retry-After when it has one. */
export function openAIError(err: unknown): {
  status: number
  body: { error: { message: string; type: string; param: string | null; code: string } }
  headers: Record<string, string>
} {
  const e = MeshError.from(err)
  const status = e.httpStatus
  const headers = retryAfterHeaders(e)
  const param = typeof e.details?.param === 'string' ? e.details.param : null
  return {
    status,
    body: {
      error: {
        message: e.reason,
        type: ERROR_TYPES[status] ?? (status >= 500 ? 'server_error' : 'invalid_request_error'),
        param,
        code: ERROR_CODES[e.code] ?? e.code.toLowerCase(),
      },
    },
    headers,
  }
}

/** Answers `err` as OpenAI's error object (unless the response is already under way). */
export const sendOpenAIError = errorSender(openAIError)

/** 405 in OpenAI's error shape. */
export function notAllowed(res: ServerResponse, allow: string): void {
  sendJson(
    res,
    405,
    {
      error: {
        message: `${res.req.method} is not allowed here`,
        type: 'invalid_request_error',
        param: null,
        code: 'method_not_allowed',
      },
    },
    { Allow: allow },
  )
}

/** A 400 naming the parameter we cannot honour (as the caller named it), and why when not simply unsupported. */
export const unsupported = (param: string, why?: string) => MeshError.unsupported(param, why)
