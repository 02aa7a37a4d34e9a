/**
 * Routing to loaded models first. Of the processors with a free slot for a model, those that
 * have it loaded are chosen among (by the configured strategy); a cold one (it holds the model
 * but would load it first) only when no loaded one is free, and only when loading it is expected
 * to take less than waiting for a busy loaded one. Pure functions of the entries' numbers.
 */
import { baseModel } from '../../kernel/inference.js'
import { isLoaded, type ProcessorEntry } from './processor-entry.js'

/** A cold load's expected time when it was never measured on that processor, ms (`routing.coldLoadMs`). */
export const DEFAULT_COLD_LOAD_MS = 10_000

/** The expected wait for `model` on a cold `e`: its measured load time, else `fallbackMs`. */
export function coldWaitMs(e: ProcessorEntry, model: string, fallbackMs: number): number {
  return e.loadMs.get(baseModel(model)) ?? fallbackMs
}

/**
 * The expected wait for a slot on the busy processors that have the model loaded, ms:
 * the work ahead (their generations past their capacity, the requests waiting here, this one)
 * served at `serviceMs` each across their slots. Infinite when there are none.
 */
export function busyWaitMs(busy: readonly ProcessorEntry[], waiting: number, serviceMs: number): number {
  let slots = 0
  let backlog = waiting + 1
  for (const e of busy) {
    slots += e.capacity
    backlog += Math.max(0, e.inflight + e.activeElsewhere - e.capacity)
  }
  return slots === 0 ? Number.POSITIVE_INFINITY : (backlog * serviceMs) / slots
}

export interface WarmthInput {
  model: string
  /** Processors serving the model with a free slot (breaker admitting, not excluded). */
  free: readonly ProcessorEntry[]
  /** Processors serving the model, loaded, without a free slot (breaker not open, not excluded); asked only when no loaded one is free. */
  busyLoaded: () => readonly ProcessorEntry[]
  /** Other requests for the model waiting in the queue (asked only when no loaded one is free). */
  waiting: () => number
  /** Mean time a request holds a slot, ms. */
  serviceMs: number
  /** A cold load's expected time where none was measured, ms. */
  coldLoadMs: number
  /** How long the request has waited in the queue already, ms (0: it just came). */
  waitedMs?: number
}

/**
 * Which of `free` to choose among: the loaded ones when any; else the cold ones whose load is
 * expected to end before a busy loaded processor's slot frees, or whose load takes no longer
 * than the request already waited (the quickest to load first); else none: it waits.
 */
export function warmCandidates(input: WarmthInput): ProcessorEntry[] {
  const { model, free } = input
  if (free.length === 0) return []
  const cold = (e: ProcessorEntry) => !isLoaded(e, model)
  // The common case, every free processor warm: no array is built.
  if (!free.some(cold)) return free as ProcessorEntry[]
  const loaded = free.filter((e) => !cold(e))
  if (loaded.length > 0) return loaded
  const busyMs = busyWaitMs(input.busyLoaded(), input.waiting(), input.serviceMs)
  let quickest = Number.POSITIVE_INFINITY
  for (const e of free) quickest = Math.min(quickest, coldWaitMs(e, model, input.coldLoadMs))
  // A request that already waited as long as the load would take stops waiting: the busy ones'
  // estimate was wrong (a long answer). Queued requests are looked at again at every heartbeat.
  if (!(quickest < busyMs) && (input.waitedMs ?? 0) < quickest) return []
  // Loads within 5% of the quickest count as equal, so the strategy shares them.
  return free.filter((e) => coldWaitMs(e, model, input.coldLoadMs) <= quickest * 1.05)
}
