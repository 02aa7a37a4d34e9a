/**
 * Placement's decisions, pure functions of the queue and the processors' numbers (the clock
 * is given), so they can be tested without a mesh: when a model's queueing is sustained enough
 * to act (DemandTracker), and on which processor to load or copy it (loadTarget, copyTarget).
 */
import { isLoaded, type ProcessorEntry, serves } from '../../facilities/router/processor-entry.js'
import type { ModelWaiting } from '../../facilities/router/router.facility.js'
import { baseModel } from '../../kernel/inference.js'
import { sharesModels } from './model-copy.js'

export interface DemandConfig {
  /** A model is under pressure while its oldest waiting request has waited at least this long. */
  queueWaitMs: number
  /** …and it is acted on once under pressure at every look for this long. */
  windowMs: number
  /** The least time between two actions for one model (doubled after each failure, up to 8×). */
  cooldownMs: number
}

/** Most doublings of the cooldown after failures in a row. */
const MAX_BACKOFF_DOUBLINGS = 3

/**
 * Which models are due a placement: looked at every tick with the queue's waiting requests per
 * model. A model is under pressure at a look when its oldest waiter has waited `queueWaitMs`;
 * pressure that lasts `windowMs` (every look in between under pressure: a momentary queue that
 * drains resets it) makes it due, unless the model's last action was less than its cooldown ago
 * or one is still under way.
 */
export class DemandTracker {
  private readonly pressuredSince = new Map<string, number>()
  private readonly lastAction = new Map<string, number>()
  private readonly failures = new Map<string, number>()
  private readonly busy = new Set<string>()

  constructor(private readonly config: DemandConfig) {}

  /** The models due an action at `now`, given what waits in the queue. */
  observe(waiting: ReadonlyMap<string, ModelWaiting>, now: number): string[] {
    const due: string[] = []
    for (const model of [...this.pressuredSince.keys()]) {
      const w = waiting.get(model)
      if (!w || now - w.oldestSince < this.config.queueWaitMs) this.pressuredSince.delete(model)
    }
    for (const [model, w] of waiting) {
      if (now - w.oldestSince < this.config.queueWaitMs) continue
      const since = this.pressuredSince.get(model) ?? now
      this.pressuredSince.set(model, since)
      if (now - since < this.config.windowMs || this.busy.has(model)) continue
      if (this.cooldownLeft(model, now) > 0) continue
      due.push(model)
    }
    return due
  }

  /** How long until `model` may be acted on again, ms (0: now). */
  cooldownLeft(model: string, now: number): number {
    const last = this.lastAction.get(model)
    if (last === undefined) return 0
    const doublings = Math.min(MAX_BACKOFF_DOUBLINGS, this.failures.get(model) ?? 0)
    return Math.max(0, last + this.config.cooldownMs * 2 ** doublings - now)
  }

  /** An action for `model` starts at `now`: its cooldown runs from here. */
  started(model: string, now: number): void {
    this.busy.add(model)
    this.lastAction.set(model, now)
  }

  /** The action ended; a failure doubles the next cooldown (up to 8×), a success resets it. */
  ended(model: string, ok: boolean): void {
    this.busy.delete(model)
    if (ok) this.failures.delete(model)
    else this.failures.set(model, (this.failures.get(model) ?? 0) + 1)
  }
}

/** Serving, answering, its breaker not open, and running nothing (of any gateway's). */
function idle(e: ProcessorEntry): boolean {
  return e.state === 'serving' && e.breaker !== 'open' && e.inflight === 0 && e.active === 0
}

/** Quickest measured load first (unmeasured last), then by key: every gateway picks alike. */
function byLoadTime(model: string) {
  const key = baseModel(model)
  return (a: ProcessorEntry, b: ProcessorEntry) => {
    const la = a.loadMs.get(key) ?? Number.POSITIVE_INFINITY
    const lb = b.loadMs.get(key) ?? Number.POSITIVE_INFINITY
    if (la !== lb) return la < lb ? -1 : 1
    return a.id < b.id ? -1 : a.id > b.id ? 1 : 0
  }
}

/**
 * An idle processor that holds `model` and reports it not loaded, quickest to load first; null
 * when there is none (processors that do not report what they have loaded are never picked).
 */
export function loadTarget(entries: Iterable<ProcessorEntry>, model: string): ProcessorEntry | null {
  const able = [...entries].filter(
    (e) => idle(e) && serves(e, model) && e.loaded !== null && !isLoaded(e, model),
  )
  return able.sort(byLoadTime(model))[0] ?? null
}

/** An idle llama.cpp processor that does not hold `model` (the mesh copies it there), by key; or null. */
export function copyTarget(entries: Iterable<ProcessorEntry>, model: string): ProcessorEntry | null {
  const able = [...entries].filter((e) => idle(e) && sharesModels(e) && !serves(e, model))
  return able.sort((a, b) => (a.id < b.id ? -1 : 1))[0] ?? null
}
