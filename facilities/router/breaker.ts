import type { MeshError } from '../../kernel/errors.js'
import type { Logger } from '../log.facility.js'
import type { ProcessorEntry } from './processor-entry.js'
import type { RoutingConfig } from './registry.js'

/** Failures that say the processor, not the request, is the problem: try another. */
export const RETRYABLE: ReadonlySet<string> = new Set([
  'ERR_UNAVAILABLE',
  'ERR_TIMEOUT',
  'ERR_BACKEND_UNAVAILABLE',
  'ERR_UNKNOWN_METHOD',
])

/**
 * Whether a failure counts against the processor's breaker: it failed to answer or
 * failed inside. Not when it was stopped for its own sake (`rerouted`: it restarted,
 * drains, is unreachable or gone), and never for the request's own faults.
 */
export function isProcessorFault(e: MeshError, rerouted: boolean): boolean {
  return !rerouted && (RETRYABLE.has(e.code) || e.code === 'ERR_INTERNAL')
}

/**
 * The processors' circuit breakers: `breakerFailures` processor-side failures in a row
 * open one for `breakerCooldownMs`; then one probe request goes through (half-open):
 * success closes it, failure opens it again. The state lives on each entry, shown in
 * `status`; this class moves it.
 */
export class Breakers {
  private readonly routing: RoutingConfig
  private readonly log: Logger
  /** Called when a cooldown ends: a processor may take requests again. */
  private readonly onCooldownEnd: () => void
  private readonly timers = new Set<NodeJS.Timeout>()

  constructor(opts: { routing: RoutingConfig; logger: Logger; onCooldownEnd: () => void }) {
    this.routing = opts.routing
    this.log = opts.logger
    this.onCooldownEnd = opts.onCooldownEnd
  }

  /** Whether the breaker lets a request through to `e` now (a half-open one: just one). */
  admits(e: ProcessorEntry, now: number): boolean {
    if (e.breaker === 'closed') return true
    if (e.breaker === 'open' && now - e.openedAt >= this.routing.breakerCooldownMs) {
      e.breaker = 'half-open'
      e.probing = false
      this.log.info({ processor: e.id }, 'breaker half-open: one probe request')
    }
    return e.breaker === 'half-open' && !e.probing
  }

  /** Whether `e`'s breaker is open and still cooling down at `now`. */
  isOpen(e: ProcessorEntry, now: number): boolean {
    return e.breaker === 'open' && now - e.openedAt < this.routing.breakerCooldownMs
  }

  /** How long until `e`'s cooldown ends, ms. */
  cooldownLeft(e: ProcessorEntry, now: number): number {
    return this.routing.breakerCooldownMs - (now - e.openedAt)
  }

  /** A request is let through to `e`: a half-open breaker lets no other through meanwhile. */
  leased(e: ProcessorEntry): void {
    if (e.breaker === 'half-open') e.probing = true
  }

  succeeded(e: ProcessorEntry): void {
    e.consecutiveFailures = 0
    if (e.breaker !== 'closed') this.log.info({ processor: e.id }, 'breaker closed: the probe succeeded')
    e.breaker = 'closed'
    e.probing = false
  }

  /** A request on `e` failed; `fault`: by the processor's doing (see `isProcessorFault`). */
  failed(e: ProcessorEntry, fault: boolean): void {
    if (!fault) {
      // Not the processor's doing (cancelled, bad request): a probe slot is free again.
      e.probing = false
      return
    }
    e.failures++
    e.consecutiveFailures++
    if (e.breaker !== 'half-open' && e.consecutiveFailures < this.routing.breakerFailures) return
    if (e.breaker !== 'open')
      this.log.warn({ processor: e.id, failures: e.consecutiveFailures }, 'breaker open')
    e.breaker = 'open'
    e.openedAt = Date.now()
    e.probing = false
    const timer = setTimeout(() => {
      this.timers.delete(timer)
      this.onCooldownEnd()
    }, this.routing.breakerCooldownMs)
    timer.unref()
    this.timers.add(timer)
  }

  /** A processor that restarted starts with a clean record. */
  reset(e: ProcessorEntry): void {
    e.breaker = 'closed'
    e.consecutiveFailures = 0
    e.probing = false
  }

  close(): void {
    for (const t of this.timers) clearTimeout(t)
    this.timers.clear()
  }
}
