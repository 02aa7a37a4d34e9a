/**
 * MeshStream: what `MeshClient.chat` and `generate` return with `stream: true`. Apart from
 * the client because it is a type programs hold and iterate, and knows nothing of gateways:
 * it turns a start function's text callbacks and final result into an async iterable.
 */
import { CancelToken } from '../../kernel/cancel.js'
import type { InferResult } from '../../kernel/inference.js'
import type { GenerationDelta } from '../../kernel/wire.js'

/**
 * One piece of a streamed answer (text, and reasoning, tool calls or log probabilities when
 * asked for); the last one has `done: true` and the final counts.
 */
export type StreamPart =
  | ({ done: false; text: string } & GenerationDelta)
  | { done: true; text: ''; result: InferResult }

/**
 * A streamed answer: iterate it for text pieces; `abort()` stops the
 * generation (on the processor too); `result` settles with the final counts.
 */
export class MeshStream implements AsyncIterable<StreamPart> {
  readonly result: Promise<InferResult>
  private readonly cancel = new CancelToken()
  private readonly queue: StreamPart[] = []
  private error: unknown = null
  private finished = false
  private wake: (() => void) | null = null

  constructor(
    start: (
      cancel: CancelToken,
      onText: (text: string, delta?: GenerationDelta) => void,
    ) => Promise<InferResult>,
  ) {
    this.result = start(this.cancel, (text, delta) => this.push({ done: false, text, ...delta }))
    this.result.then(
      (result) => {
        this.push({ done: true, text: '', result })
        this.finished = true
        this.notify()
      },
      (err) => {
        this.error = err
        this.finished = true
        this.notify()
      },
    )
  }

  abort(): void {
    this.cancel.abort()
  }

  get aborted(): boolean {
    return this.cancel.aborted
  }

  private push(part: StreamPart): void {
    this.queue.push(part)
    this.notify()
  }

  private notify(): void {
    const wake = this.wake
    this.wake = null
    wake?.()
  }

  async *[Symbol.asyncIterator](): AsyncIterator<StreamPart> {
    while (true) {
      const part = this.queue.shift()
      if (part) {
        yield part
        if (part.done) return
        continue
      }
      if (this.finished) {
        if (this.error) throw this.error
        return
      }
      await new Promise<void>((resolve) => {
        this.wake = resolve
      })
    }
  }
}
