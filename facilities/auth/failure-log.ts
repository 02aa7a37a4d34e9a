import { setNewest } from './bounded-map.js'

/**
 * A sliding count of failures per name (an account, a source, or an account
 * from one source) within `windowMs`, plus the attempts still being checked:
 * a burst of guesses sent at once is held to `max` like guesses sent one by
 * one. The last `keep` failures are kept (at least `max`).
 */
export class FailureLog {
  private readonly failures = new Map<string, number[]>()
  private readonly inFlight = new Map<string, number>()

  constructor(
    private readonly max: number,
    private readonly windowMs: number,
    private readonly keep = max,
  ) {}

  private recent(name: string, now: number): number[] {
    const list = (this.failures.get(name) ?? []).filter((t) => t > now - this.windowMs)
    if (list.length) this.failures.set(name, list)
    else this.failures.delete(name)
    return list
  }

  /** Failures within the window plus attempts in flight. */
  count(name: string, now = Date.now()): number {
    return this.recent(name, now).length + (this.inFlight.get(name) ?? 0)
  }

  /** Ms until `name` may try again (failures and attempts in flight count), or 0. */
  blockedFor(name: string, now = Date.now()): number {
    const list = this.recent(name, now)
    if (list.length + (this.inFlight.get(name) ?? 0) < this.max) return 0
    if (list.length < this.max) return 1000 // attempts in flight: their outcome decides
    return (list[list.length - this.max] as number) + this.windowMs - now
  }

  /** An attempt starts; call `done` with its outcome. */
  begin(name: string): void {
    this.inFlight.set(name, (this.inFlight.get(name) ?? 0) + 1)
  }

  /** An attempt ends; a failure is counted. A success clears nothing by itself (see `clear`). */
  done(name: string, failed: boolean, now = Date.now()): void {
    const n = (this.inFlight.get(name) ?? 1) - 1
    if (n > 0) this.inFlight.set(name, n)
    else this.inFlight.delete(name)
    if (!failed) return
    const list = this.recent(name, now)
    list.push(now)
    setNewest(this.failures, name, list.slice(-Math.max(this.keep, this.max)))
  }

  clear(name: string): void {
    this.failures.delete(name)
  }

  /** Forgets names whose failures all left the window. */
  sweep(now = Date.now()): void {
    for (const name of this.failures.keys()) this.recent(name, now)
  }
}
