import { MeshError } from './errors.js'

/**
 * A cancellation token for the request path. AbortController/AbortSignal are
 * EventTargets, and creating one plus adding and removing listeners is a
 * measurable share of a gateway's CPU per request (the A/B is in
 * docs/benchmarks.md, "Cancellation"); this is a plain object with a callback list. `signal` makes a real AbortSignal on
 * demand for APIs that want one (backends, fetch).
 */
export class CancelToken {
  private _aborted = false
  private _reason: unknown = undefined
  private callbacks: Array<(reason: unknown) => void> | null = null
  private controller: AbortController | null = null

  get aborted(): boolean {
    return this._aborted
  }

  get reason(): unknown {
    return this._reason
  }

  /** Cancels once; later calls do nothing. Callbacks run in the order they were added. */
  abort(reason?: unknown): void {
    if (this._aborted) return
    this._aborted = true
    this._reason = reason
    this.controller?.abort(reason)
    const callbacks = this.callbacks
    this.callbacks = null
    if (callbacks) for (const fn of callbacks) fn(reason)
  }

  /** Runs `fn` on abort (at once if already aborted); returns the function that removes it. */
  onAbort(fn: (reason: unknown) => void): () => void {
    if (this._aborted) {
      fn(this._reason)
      return noop
    }
    this.callbacks ??= []
    this.callbacks.push(fn)
    return () => {
      const list = this.callbacks
      if (!list) return
      const i = list.indexOf(fn)
      if (i !== -1) list.splice(i, 1)
    }
  }

  /** An AbortSignal that aborts with this token (made on first use). */
  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController()
      if (this._aborted) this.controller.abort(this._reason)
    }
    return this.controller.signal
  }
}

export function noop(): void {}

/** The error a request stopped by `reason` fails with: the reason itself if it is a MeshError, else ERR_CANCELLED. */
export function cancelError(reason: unknown): MeshError {
  return reason instanceof MeshError ? reason : MeshError.cancelled()
}

/**
 * The AbortSignal of a request's callbacks: its signal, the one made from its
 * CancelToken, or one that fires with either when it has both.
 */
export function signalOf(cb: { signal?: AbortSignal; cancel?: CancelToken }): AbortSignal | undefined {
  const { signal, cancel } = cb
  if (!cancel) return signal
  return signal ? AbortSignal.any([signal, cancel.signal]) : cancel.signal
}

/** Whether a request's caller has stopped it, by either its signal or its CancelToken. */
export function isCancelled(cb: { signal?: AbortSignal; cancel?: CancelToken }): boolean {
  return cb.cancel?.aborted === true || cb.signal?.aborted === true
}

/**
 * The `cancel` RPC of gateways and processors: stops the stream `payload.id`
 * that the same caller started (`running` is keyed `<caller key hex>/<id>`).
 * @throws ERR_BAD_REQUEST without an id
 */
export function cancelById(
  running: ReadonlyMap<string, CancelToken>,
  payload: unknown,
  caller: Buffer,
): { cancelled: boolean } {
  const id = (payload as { id?: unknown } | null)?.id
  if (typeof id !== 'string') throw MeshError.badRequest('request.id: expected string')
  const token = running.get(`${caller.toString('hex')}/${id}`)
  token?.abort()
  return { cancelled: token !== undefined }
}
