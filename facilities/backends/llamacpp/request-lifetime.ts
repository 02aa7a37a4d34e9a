/**
 * The lifetime of the backend's requests: each runs with one signal that fires
 * on its caller's abort or on `close()`, and `close()` waits for all of them.
 * An aborted request fails with ERR_CANCELLED, or ERR_BACKEND_UNAVAILABLE when
 * the backend closed under it.
 */
import { MeshError } from '../../../kernel/errors.js'
import { errorMessage } from '../../../kernel/util.js'
import { checkCallerSignal } from '../request-checks.js'

/** Rejects with `onAbort()` when `signal` fires first; `p` itself keeps running (it may be shared). */
export function abortable<T>(p: Promise<T>, signal: AbortSignal, onAbort: () => MeshError): Promise<T> {
  if (signal.aborted) return Promise.reject(onAbort())
  return new Promise<T>((resolve, reject) => {
    const abort = () => reject(onAbort())
    signal.addEventListener('abort', abort, { once: true })
    p.then(
      (v) => {
        signal.removeEventListener('abort', abort)
        resolve(v)
      },
      (err: unknown) => {
        signal.removeEventListener('abort', abort)
        reject(err)
      },
    )
  })
}

export class RequestLifetimes {
  private _closed = false
  /** Aborts every in-flight request when the backend closes. */
  private readonly closeController = new AbortController()
  private readonly inflight = new Set<Promise<unknown>>()

  get closed(): boolean {
    return this._closed
  }

  /**
   * Runs a request with a signal that also fires on close, and keeps it
   * visible to `close()`.
   * @throws ERR_BACKEND_UNAVAILABLE when closed, ERR_BAD_REQUEST or ERR_CANCELLED for the caller's signal
   */
  run<T>(userSignal: AbortSignal | undefined, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    if (this._closed) return Promise.reject(MeshError.backendUnavailable('llama.cpp backend is closed'))
    checkCallerSignal(userSignal)
    const signal = userSignal
      ? AbortSignal.any([userSignal, this.closeController.signal])
      : this.closeController.signal
    const p = fn(signal)
    this.inflight.add(p)
    const forget = () => this.inflight.delete(p)
    p.then(forget, forget)
    return p
  }

  /** Why an aborted request stopped: its caller (ERR_CANCELLED) or close (ERR_BACKEND_UNAVAILABLE). */
  abortError(): MeshError {
    return this._closed ? MeshError.backendUnavailable('llama.cpp backend closed') : MeshError.cancelled()
  }

  /** A request's failure as a MeshError: as it is, the abort's, or ERR_INTERNAL. */
  toMeshError(err: unknown, signal: AbortSignal): MeshError {
    if (err instanceof MeshError) return err
    if (signal.aborted) return this.abortError()
    return MeshError.internal(`llama.cpp: ${errorMessage(err)}`, err)
  }

  /** Aborts every request and waits for them to settle. Safe to call twice. */
  async close(): Promise<void> {
    // Set before aborting: abort listeners run synchronously and ask abortError() why.
    this._closed = true
    this.closeController.abort()
    await Promise.allSettled([...this.inflight])
  }
}
