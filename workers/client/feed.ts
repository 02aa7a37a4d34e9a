/**
 * Feed: the async iterable behind the client's long answers (a streamed generation, a model
 * pull). A start function pushes items as they come and settles with the result; iterating
 * yields the items in order, then ends (or throws the start's error); `abort()` stops it.
 */
import { CancelToken } from '../../kernel/cancel.js'

export class Feed<Item, Result> implements AsyncIterable<Item> {
  readonly result: Promise<Result>
  private readonly cancel = new CancelToken()
  private readonly queue: Item[] = []
  private error: unknown = null
  private finished = false
  private wake: (() => void) | null = null

  /** @param last the item the result makes, yielded after every other (none when absent) */
  constructor(
    start: (cancel: CancelToken, push: (item: Item) => void) => Promise<Result>,
    last?: (result: Result) => Item,
  ) {
    this.result = start(this.cancel, (item) => this.push(item))
    this.result.then(
      (result) => {
        if (last) this.queue.push(last(result))
        this.end(null)
      },
      (err) => this.end(err),
    )
  }

  abort(): void {
    this.cancel.abort()
  }

  get aborted(): boolean {
    return this.cancel.aborted
  }

  private push(item: Item): void {
    this.queue.push(item)
    this.notify()
  }

  private end(err: unknown): void {
    this.error = err
    this.finished = true
    this.notify()
  }

  private notify(): void {
    const wake = this.wake
    this.wake = null
    wake?.()
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Item> {
    while (true) {
      if (this.queue.length > 0) {
        yield this.queue.shift() as Item
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
