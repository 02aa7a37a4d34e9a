import { Counter, Gauge, type Registry } from 'prom-client'
import { createMetricsRegistry } from './registry.js'

/** What every serving worker's own series read, at scrape time, from its net facility. */
export interface WorkerMetricsSource {
  /** Open RPC connections (null: the net facility is not open). */
  connections(): { inbound: number; outbound: number } | null
  /** DHT lookups and announces started so far. */
  dht(): { lookups: number; announces: number } | null
}

/**
 * A counter whose value lives elsewhere (a plain number the code increments on its own path,
 * with no metrics library on it) and is read at each scrape.
 */
export function counterReadAtScrape(
  register: Registry,
  name: string,
  help: string,
  read: () => number,
): void {
  new Counter({
    name,
    help,
    registers: [register],
    collect() {
      this.reset()
      this.inc(read())
    },
  })
}

/**
 * A serving worker's registry: the process's default metrics (CPU, memory, event-loop lag, GC,
 * handles) under `llm_mesh_`, its open RPC connections and its DHT lookups and announces.
 */
export function createWorkerRegistry(source: WorkerMetricsSource): Registry {
  const register = createMetricsRegistry()
  new Gauge({
    name: 'llm_mesh_rpc_connections',
    help: 'Open RPC connections: inbound (peers to this worker) and outbound (this worker to peers).',
    labelNames: ['direction'],
    registers: [register],
    collect() {
      const open = source.connections()
      this.labels('inbound').set(open?.inbound ?? 0)
      this.labels('outbound').set(open?.outbound ?? 0)
    },
  })
  counterReadAtScrape(
    register,
    'llm_mesh_dht_lookups_total',
    'DHT lookups of a role topic this worker started (processor discovery, gateway lookups).',
    () => source.dht()?.lookups ?? 0,
  )
  counterReadAtScrape(
    register,
    'llm_mesh_dht_announces_total',
    'DHT announces of this worker on its role topic (at start, then every 5 min).',
    () => source.dht()?.announces ?? 0,
  )
  return register
}
