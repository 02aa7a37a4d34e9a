/**
 * The context sequences of one loaded model: the unit of parallelism, held by
 * one request from its first token to its last. Requests that find none free
 * wait in order of arrival.
 */
import type { LlamaContextSequence } from 'node-llama-cpp'
import type { MeshError } from '../../../kernel/errors.js'

interface SequenceWaiter {
  resolve(seq: LlamaContextSequence): void
  reject(err: MeshError): void
}

export class SequencePool {
  private readonly waiters: SequenceWaiter[] = []

  constructor(private readonly free: LlamaContextSequence[]) {}

  /**
   * A free sequence now, or the next one released (FIFO). Pair with `release`.
   * Rejects with `abortError()` when `signal` fires while waiting.
   */
  acquire(signal: AbortSignal, abortError: () => MeshError): Promise<LlamaContextSequence> {
    if (signal.aborted) return Promise.reject(abortError())
    const seq = this.free.pop()
    if (seq) return Promise.resolve(seq)
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        const i = this.waiters.indexOf(waiter)
        if (i >= 0) this.waiters.splice(i, 1)
        reject(abortError())
      }
      const waiter: SequenceWaiter = {
        resolve: (s) => {
          signal.removeEventListener('abort', onAbort)
          resolve(s)
        },
        reject: (err) => {
          signal.removeEventListener('abort', onAbort)
          reject(err)
        },
      }
      signal.addEventListener('abort', onAbort, { once: true })
      this.waiters.push(waiter)
    })
  }

  /** Hands `seq` to the longest waiter, or back to the free list. */
  release(seq: LlamaContextSequence): void {
    const next = this.waiters.shift()
    if (next) next.resolve(seq)
    else this.free.push(seq)
  }

  /** Fails every waiter with `err` (the model is unloading). */
  rejectWaiters(err: () => MeshError): void {
    for (const w of this.waiters.splice(0)) w.reject(err())
  }
}
