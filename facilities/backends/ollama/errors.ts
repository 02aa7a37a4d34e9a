/** Failures of a call to Ollama (its HTTP errors, the client's, the network's) as MeshError codes. */
import { MeshError } from '../../../kernel/errors.js'
import { errorMessage } from '../../../kernel/util.js'
import type { StopCause } from './call.js'

/** fetch's own message is only "fetch failed"; the reason (ECONNREFUSED …) is in its cause. */
export function detailOf(err: unknown): string {
  const message = errorMessage(err)
  return err instanceof Error && err.cause instanceof Error ? `${message} (${err.cause.message})` : message
}

/** The client's error for a non-2xx reply carries the status; stream errors are plain Errors. */
function statusOf(err: unknown): number | null {
  const status = (err as { status_code?: unknown } | null)?.status_code
  return typeof status === 'number' ? status : null
}

/** True for errors that mean the server could not be reached at all. */
function isConnectionError(err: unknown): boolean {
  let e: unknown = err
  for (let depth = 0; depth < 4 && e instanceof Error; depth++) {
    const code = (e as { code?: unknown }).code
    if (
      typeof code === 'string' &&
      /^(ECONNREFUSED|ECONNRESET|EHOSTUNREACH|ENOTFOUND|ETIMEDOUT|EAI_AGAIN|UND_ERR)/.test(code)
    ) {
      return true
    }
    if (e.message === 'fetch failed') return true
    e = e.cause
  }
  return false
}

/** The error of a call stopped by `cause`: ERR_CANCELLED, or ERR_BACKEND_UNAVAILABLE for close and timeout. */
export function stoppedError(cause: StopCause, timeoutMs: number, err?: unknown): MeshError {
  if (cause === 'cancelled') return MeshError.cancelled()
  if (cause === 'closed') return MeshError.backendUnavailable('ollama backend closed')
  return MeshError.backendUnavailable(`Ollama made no progress for ${timeoutMs} ms`, err)
}

/**
 * A failed call as a MeshError: the stop's when the call was stopped, else by
 * HTTP status (404: ERR_MODEL_NOT_FOUND, or not Ollama at all when the request
 * named no model; 400: ERR_BAD_REQUEST), else ERR_BACKEND_UNAVAILABLE.
 */
export function toMeshError(
  err: unknown,
  call: { host: string; cause: StopCause | null; timeoutMs: number; model: string | undefined },
): MeshError {
  if (err instanceof MeshError) return err
  const { host, cause, timeoutMs, model } = call
  if (cause) return stoppedError(cause, timeoutMs, err)
  const message = errorMessage(err)
  const status = statusOf(err)
  if (status === 404 || (status === null && /not found/i.test(message) && !isConnectionError(err))) {
    return model
      ? MeshError.modelNotFound(model)
      : MeshError.backendUnavailable(`${host} is not an Ollama server: ${message}`, err)
  }
  if (status === 400) return MeshError.badRequest(message)
  if (isConnectionError(err)) {
    return MeshError.backendUnavailable(`cannot reach Ollama at ${host}: ${detailOf(err)}`, err)
  }
  return MeshError.backendUnavailable(`Ollama: ${message}`, err)
}
