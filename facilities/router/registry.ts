import type { GatewayConfig } from '../../kernel/config.js'
import { baseModel } from '../../kernel/inference.js'
import type { ProcessorView } from '../../kernel/wire.js'
import { type ProcessorEntry, serves, viewOf } from './processor-entry.js'

export type RegistryConfig = GatewayConfig['registry']
export type RoutingConfig = GatewayConfig['routing']

/**
 * The processors this gateway knows, by key, and the models any of them ever served
 * (a model once served is refused as "no processor", not "not found", while none is up).
 * Discovery adds and removes entries; the scheduler reads them.
 */
export class Registry {
  private readonly entries = new Map<string, ProcessorEntry>()
  private readonly knownModels = new Set<string>()

  get size(): number {
    return this.entries.size
  }

  get(id: string): ProcessorEntry | undefined {
    return this.entries.get(id)
  }

  has(id: string): boolean {
    return this.entries.has(id)
  }

  add(entry: ProcessorEntry): void {
    this.entries.set(entry.id, entry)
  }

  /** Removes `entry`; false when it was not the one registered under its key. */
  delete(entry: ProcessorEntry): boolean {
    if (this.entries.get(entry.id) !== entry) return false
    this.entries.delete(entry.id)
    return true
  }

  clear(): void {
    this.entries.clear()
  }

  values(): IterableIterator<ProcessorEntry> {
    return this.entries.values()
  }

  rememberModels(models: readonly string[]): void {
    for (const m of models) this.knownModels.add(baseModel(m))
  }

  /** Whether some processor served `model` once, though none may now. */
  everServed(model: string): boolean {
    return this.knownModels.has(baseModel(model))
  }

  list(): ProcessorView[] {
    const now = Date.now()
    return [...this.entries.values()].map((e) => viewOf(e, now))
  }

  entriesFor(model: string): ProcessorEntry[] {
    return [...this.entries.values()].filter((e) => serves(e, model))
  }

  /** Whether any known processor serves `model` (on every request's path: no array is built). */
  servesAny(model: string): boolean {
    for (const e of this.entries.values()) if (serves(e, model)) return true
    return false
  }

  isKnownModel(model: string): boolean {
    return this.servesAny(model) || this.everServed(model)
  }

  /** Processors that answer (serving or draining): those to ask for models and running models. */
  live(): ProcessorEntry[] {
    return [...this.entries.values()].filter((e) => e.state !== 'unreachable')
  }

  /** Whether a processor other than `except` could take a request for `model` now or soon. */
  hasOtherFor(model: string, except: string): boolean {
    for (const e of this.entries.values()) {
      if (e.id !== except && e.state === 'serving' && serves(e, model)) return true
    }
    return false
  }

  /** Slots of every processor that serves `model`, whatever their state. */
  capacityFor(model: string): number {
    let slots = 0
    for (const e of this.entries.values()) if (serves(e, model)) slots += e.capacity
    return slots
  }

  /** Slots of the serving processors for `model`: what its users share. */
  servingSlotsFor(model: string): number {
    let slots = 0
    for (const e of this.entries.values()) if (e.state === 'serving' && serves(e, model)) slots += e.capacity
    return slots
  }
}

/**
 * The longest a silently cut processor running this gateway's work stays serving: the next tick
 * sends a beat (≤ one interval), each missed beat waits out its timeout and the next tick, and
 * the last one's timeout makes it unreachable.
 */
export function detectionBoundMs(
  c: Pick<RegistryConfig, 'heartbeatIntervalMs' | 'heartbeatTimeoutMs' | 'maxMissed'>,
): number {
  const i = c.heartbeatIntervalMs
  return i + (c.maxMissed - 1) * Math.ceil(c.heartbeatTimeoutMs / i) * i + c.heartbeatTimeoutMs
}
