/**
 * One request to Ollama from start to end: a signal that fires on the
 * caller's abort, on the backend's close, or when Ollama stops making
 * progress, so a request can be stopped while the model is still loading
 * (before the client hands out its abortable iterator) as well as mid-stream.
 */
import type { Ollama } from 'ollama'
import { callClient } from './client.js'

export type StopCause = 'cancelled' | 'closed' | 'timeout'

export interface Call {
  readonly signal: AbortSignal
  readonly client: Ollama
  /** Progress seen: restart the timeout. */
  kick(): void
  cause(): StopCause | null
  end(): void
}

/**
 * Starts a call to `host` that stops on `userSignal`, on `closeSignal`, or
 * after `timeoutMs` without progress. Pair with `end()`.
 */
export function beginCall(
  host: string,
  userSignal: AbortSignal | undefined,
  closeSignal: AbortSignal,
  timeoutMs: number,
): Call {
  const controller = new AbortController()
  let cause: StopCause | null = null
  const stop = (why: StopCause) => {
    if (cause) return
    cause = why
    controller.abort()
  }
  const onUser = () => stop('cancelled')
  const onClose = () => stop('closed')
  userSignal?.addEventListener('abort', onUser, { once: true })
  closeSignal.addEventListener('abort', onClose, { once: true })
  let timer: NodeJS.Timeout | null = null
  const kick = () => {
    if (timer) clearTimeout(timer)
    timer = setTimeout(() => stop('timeout'), timeoutMs)
  }
  kick()
  const signal = controller.signal
  return {
    signal,
    client: callClient(host, signal, kick),
    kick,
    cause: () => cause,
    end: () => {
      if (timer) clearTimeout(timer)
      timer = null
      userSignal?.removeEventListener('abort', onUser)
      closeSignal.removeEventListener('abort', onClose)
    },
  }
}
