import ReadyResource from 'ready-resource'

/**
 * A small service a worker declares and owns: `ready()` runs `_open()` once,
 * `close()` runs `_close()` once; both are safe to call twice. A failed
 * `_open()` must undo its own partial work before it throws.
 *
 * A facility that serves callers of its own (HTTP) takes part in the worker's
 * drain: `stopAccepting()` when the worker starts stopping (take nothing new),
 * and `openRequests` for what it still answers, which the worker waits for before it closes
 * anything.
 */
export abstract class Facility extends ReadyResource {
  abstract readonly name: string

  /** Requests this facility is still answering (0 for those that serve nobody directly). */
  get openRequests(): number {
    return 0
  }

  /** The worker is stopping: refuse new work, finish what runs. */
  stopAccepting(): void {}
}
