/**
 * How a MeshError crosses RPC and comes back as the same MeshError, and which MeshError a
 * transport failure (timeout, closed connection, unknown method) becomes. Apart because
 * both ends of a call use it, and tests read wire errors with it.
 */
import { isErrorCode, MeshError } from '../../kernel/errors.js'

/**
 * What a handler throws across RPC: protomux-rpc carries `message`, `code` and a
 * string `context` of the cause, so details ride in `context` as JSON.
 */
export function toWireError(err: unknown): Error {
  const mesh = MeshError.from(err)
  const wire = new Error(mesh.reason) as Error & { code: string; context?: string }
  wire.code = mesh.code
  if (mesh.details) wire.context = JSON.stringify(mesh.details)
  return wire
}

/** Rebuilds the MeshError a remote handler threw, or names the transport failure. */
export function fromWireError(err: unknown, method: string): MeshError {
  if (err instanceof MeshError) return err
  const e = err as {
    code?: string
    message?: string
    cause?: { code?: string; message?: string; context?: string }
  }
  if (e?.code === 'REQUEST_ERROR' && e.cause && isErrorCode(e.cause.code)) {
    let details: Record<string, unknown> | undefined
    if (e.cause.context) {
      try {
        details = JSON.parse(e.cause.context) as Record<string, unknown>
      } catch {}
    }
    return new MeshError(e.cause.code, e.cause.message ?? 'request failed', details)
  }
  switch (e?.code) {
    case 'REQUEST_ERROR':
      return MeshError.internal(e.cause?.message ?? e.message ?? 'request failed')
    case 'UNKNOWN_METHOD':
      return new MeshError('ERR_UNKNOWN_METHOD', `unknown method '${method}'`, { method })
    case 'TIMEOUT_EXCEEDED':
      return MeshError.timeout(`'${method}' got no answer in time`)
    case 'CHANNEL_CLOSED':
    case 'CHANNEL_DESTROYED':
      return new MeshError('ERR_UNAVAILABLE', `connection closed during '${method}'`)
    default:
      return new MeshError('ERR_UNAVAILABLE', `'${method}' failed: ${e?.message ?? String(err)}`)
  }
}
