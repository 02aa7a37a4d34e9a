/**
 * Runs async functions one at a time, in the order they were handed in: for
 * work that reads state and then writes it (token rotation, ledger index
 * writes against month reads), where two interleaved runs would each see the
 * state before the other's write. A failed run does not stop the next.
 */
export class Serial {
  private tail: Promise<void> = Promise.resolve()

  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn)
    this.tail = result.then(
      () => {},
      () => {},
    )
    return result
  }

  /** Resolves once everything handed in so far has run. */
  idle(): Promise<void> {
    return this.tail
  }
}
