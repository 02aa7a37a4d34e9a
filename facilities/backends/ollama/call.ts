/**
 * One request to Ollama from start to end: it stops on the caller's abort (its
 * signal or CancelToken), on the backend's close, or when Ollama stops making
 * progress, and a stop cuts its fetches short, so a request can be stopped
 * while the model is still loading (before any header) as well as mid-stream.
 * Plain callbacks rather than an AbortController merged by `AbortSignal.any`:
 * that alone cost ~25-50 µs per call on this VM (bench/ollama-backend.ts).
 */
import type { Ollama } from 'ollama'
import type { CancelToken } from '../../../kernel/cancel.js'
import { callClient } from './client.js'
import type { FetchScope, KeepAliveFetch } from './keep-alive-fetch.js'

export type StopCause = 'cancelled' | 'closed' | 'timeout'

export interface CallOptions {
  host: string
  transport: KeepAliveFetch
  /** The caller's: either stops the call with 'cancelled'. */
  signal?: AbortSignal | undefined
  cancel?: CancelToken | undefined
  /** Longest wait for progress (headers, or the next chunk). */
  timeoutMs: number
  /** The backend's calls in flight: the call is in it until `end()`, so close() can stop it. */
  inflight: Set<Call>
}

export class Call implements FetchScope {
  readonly client: Ollama
  private stopCause: StopCause | null = null
  private ended = false
  private releases: Array<(stopped: boolean) => void> = []
  private readonly timer: NodeJS.Timeout
  private readonly signal: AbortSignal | undefined
  private readonly inflight: Set<Call>
  private readonly unhookCancel: (() => void) | undefined
  private readonly onUserAbort = () => this.stop('cancelled')

  /** Starts a call; pair with `end()`. */
  constructor(opts: CallOptions) {
    const { host, transport, signal, cancel, timeoutMs, inflight } = opts
    this.signal = signal
    this.inflight = inflight
    inflight.add(this)
    signal?.addEventListener('abort', this.onUserAbort, { once: true })
    this.unhookCancel = cancel?.onAbort(this.onUserAbort)
    this.timer = setTimeout(() => this.stop('timeout'), timeoutMs)
    this.client = callClient(host, transport, this)
  }

  get stopped(): boolean {
    return this.stopCause !== null
  }

  cause(): StopCause | null {
    return this.stopCause
  }

  /** Progress seen: restart the timeout. */
  kick(): void {
    if (!this.ended) this.timer.refresh()
  }

  /** Stops the call once: its fetches are cut short. Does nothing after `end()`. */
  stop(why: StopCause): void {
    if (this.stopCause !== null || this.ended) return
    this.stopCause = why
    this.release(true)
  }

  onRelease(fn: (stopped: boolean) => void): void {
    if (this.ended || this.stopCause !== null) fn(this.stopCause !== null)
    else this.releases.push(fn)
  }

  /** The call is over: timer and listeners go; a fetch still waiting for headers is stopped, a reply still arriving may finish. */
  end(): void {
    if (this.ended) return
    this.ended = true
    clearTimeout(this.timer)
    this.signal?.removeEventListener('abort', this.onUserAbort)
    this.unhookCancel?.()
    this.inflight.delete(this)
    this.release(false)
  }

  private release(stopped: boolean): void {
    const releases = this.releases
    this.releases = []
    for (const fn of releases) fn(stopped)
  }
}
