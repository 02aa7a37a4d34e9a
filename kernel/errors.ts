/**
 * Every error that crosses a worker boundary is a MeshError with a stable code.
 * Codes are defined once here with the HTTP status they map to; tests assert
 * codes, never prose.
 */

export const ERROR_CODES = {
  ERR_BAD_REQUEST: 400,
  /** A field the mesh cannot honour on the backend that would serve it (`details.param` names it). */
  ERR_UNSUPPORTED: 400,
  ERR_BAD_CONFIG: 400,
  ERR_PAYLOAD_TOO_LARGE: 413,
  ERR_AUTH_INVALID: 401,
  ERR_AUTH_REQUIRED: 401,
  ERR_FORBIDDEN: 403,
  /** An invite token that is malformed, unknown, for another role, or whose secret is wrong. */
  ERR_INVITE_INVALID: 401,
  ERR_INVITE_EXPIRED: 403,
  ERR_INVITE_REVOKED: 403,
  ERR_NOT_FOUND: 404,
  ERR_MODEL_NOT_FOUND: 404,
  ERR_UNKNOWN_METHOD: 404,
  ERR_CONFLICT: 409,
  /** A downloaded or copied file's content is not the one asked for (its digest differs). */
  ERR_DIGEST_MISMATCH: 422,
  ERR_RATE_LIMITED: 429,
  ERR_QUOTA_EXCEEDED: 429,
  ERR_CANCELLED: 499,
  ERR_INTERNAL: 500,
  ERR_NO_PROCESSOR: 503,
  ERR_BACKEND_UNAVAILABLE: 503,
  ERR_BUSY: 503,
  ERR_UNAVAILABLE: 503,
  ERR_TIMEOUT: 504,
  ERR_STREAM_BROKEN: 502,
  /** Data that does not match its digest (a model file whose sha256 differs from its manifest's, blocks that fail verification). */
  ERR_INTEGRITY: 502,
  /** A processor without room for a model copy (its file and blocks), refused before it starts. */
  ERR_NO_SPACE: 507,
} as const

export type ErrorCode = keyof typeof ERROR_CODES

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(ERROR_CODES, code)
}

export class MeshError extends Error {
  readonly code: ErrorCode
  /** Extra machine-readable facts, e.g. `{ retryAfterMs }`; crosses RPC as JSON. */
  readonly details: Record<string, unknown> | undefined

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>, cause?: unknown) {
    super(`${code}: ${message}`, cause === undefined ? undefined : { cause })
    this.name = 'MeshError'
    this.code = code
    this.details = details
  }

  /** The message without the `CODE: ` prefix. */
  get reason(): string {
    const prefix = `${this.code}: `
    return this.message.startsWith(prefix) ? this.message.slice(prefix.length) : this.message
  }

  get httpStatus(): number {
    return ERROR_CODES[this.code]
  }

  static badRequest(message: string, details?: Record<string, unknown>): MeshError {
    return new MeshError('ERR_BAD_REQUEST', message, details)
  }

  /** `param` (a request field, as the caller named it) cannot be honoured; `why` says by what. */
  static unsupported(param: string, why = 'is not supported by this server'): MeshError {
    return new MeshError('ERR_UNSUPPORTED', `${param} ${why}`, { param })
  }

  static badConfig(message: string, details?: Record<string, unknown>): MeshError {
    return new MeshError('ERR_BAD_CONFIG', message, details)
  }

  static modelNotFound(model: string): MeshError {
    return new MeshError('ERR_MODEL_NOT_FOUND', `model '${model}' not found`, { model })
  }

  static noProcessor(model: string, why?: string): MeshError {
    return new MeshError(
      'ERR_NO_PROCESSOR',
      `no live processor serves model '${model}'${why ? ` (${why})` : ''}`,
      { model },
    )
  }

  static backendUnavailable(message: string, cause?: unknown): MeshError {
    return new MeshError('ERR_BACKEND_UNAVAILABLE', message, undefined, cause)
  }

  static timeout(message: string, details?: Record<string, unknown>): MeshError {
    return new MeshError('ERR_TIMEOUT', message, details)
  }

  static cancelled(message = 'request cancelled'): MeshError {
    return new MeshError('ERR_CANCELLED', message)
  }

  static payloadTooLarge(what: string, size: number, limit: number): MeshError {
    return new MeshError('ERR_PAYLOAD_TOO_LARGE', `${what} is ${size} bytes, the limit is ${limit}`, {
      size,
      limit,
    })
  }

  static internal(message: string, cause?: unknown): MeshError {
    return new MeshError('ERR_INTERNAL', message, undefined, cause)
  }

  /** Wire form: what a handler sends so the caller can rebuild the same error. */
  toJSON(): { code: ErrorCode; message: string; details?: Record<string, unknown> } {
    return this.details
      ? { code: this.code, message: this.reason, details: this.details }
      : { code: this.code, message: this.reason }
  }

  /** Turns anything thrown into a MeshError; unknown errors become ERR_INTERNAL. */
  static from(err: unknown): MeshError {
    if (err instanceof MeshError) return err
    if (err instanceof Error) {
      const code = (err as { code?: unknown }).code
      if (isErrorCode(code)) return new MeshError(code, stripCode(err.message, code), undefined, err)
      if (err.name === 'AbortError') return MeshError.cancelled()
      return MeshError.internal(err.message, err)
    }
    return MeshError.internal(String(err))
  }
}

function stripCode(message: string, code: string): string {
  return message.startsWith(`${code}: `) ? message.slice(code.length + 2) : message
}
