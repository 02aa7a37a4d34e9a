import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import { counterReadAtScrape } from './worker-metrics.js'

const BREAKER_STATES = ['closed', 'open', 'half-open'] as const
/** Time a request waited in the fair queue for a slot. */
const QUEUE_WAIT_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
/** One journal block written: a write(2) of a few KB, or a slow disk. */
const COMMIT_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1]

/** What the gateway's routing and ledger series read at scrape time. */
export interface GatewayRoutingSource {
  /** Each known processor's breaker state ('closed', 'open', 'half-open'). */
  breakerStates(): Iterable<string>
  /** Requests waiting in the fair queue now. */
  queued(): number
  /** Tries of requests after their first, and legs moved off processors that went away. */
  retries(): number
  failovers(): number
  /** Journal blocks written but not yet in the Hyperbee index (0 without a ledger). */
  ledgerIndexLag(): number
}

/**
 * The gateway's routing and ledger series: breakers, the fair queue, retries and failovers,
 * the ledger's journal commits and index lag, and processors whose series a scrape missed.
 */
export class GatewayRoutingMetrics {
  /** Observes one queue wait, in seconds (bound: passed as a callback). */
  readonly queueWait: (seconds: number) => void
  /** Observes one journal block's write, in seconds (bound: passed as a callback). */
  readonly ledgerCommit: (seconds: number) => void
  private readonly scrapeErrors: Counter

  constructor(register: Registry, source: GatewayRoutingSource) {
    const registers = [register]
    new Gauge({
      name: 'llm_mesh_gateway_breakers',
      help: "Processors this gateway knows, by their circuit breaker's state (closed, open, half_open).",
      labelNames: ['state'],
      registers,
      collect() {
        const counts = { closed: 0, open: 0, 'half-open': 0 }
        for (const state of source.breakerStates())
          if (Object.hasOwn(counts, state)) counts[state as 'open']++
        for (const state of BREAKER_STATES) this.labels(state.replace('-', '_')).set(counts[state])
      },
    })
    new Gauge({
      name: 'llm_mesh_gateway_queue_depth',
      help: 'Requests waiting in the fair queue for a free processor slot.',
      registers,
      collect() {
        this.set(source.queued())
      },
    })
    const wait = new Histogram({
      name: 'llm_mesh_gateway_queue_wait_seconds',
      help: 'Time a request that found every slot taken waited in the fair queue until it got one.',
      buckets: QUEUE_WAIT_BUCKETS,
      registers,
    })
    this.queueWait = (seconds) => wait.observe(seconds)
    counterReadAtScrape(
      register,
      'llm_mesh_gateway_retries_total',
      'Tries of requests after their first: after a processor failed before its first token, or was taken off it.',
      () => source.retries(),
    )
    counterReadAtScrape(
      register,
      'llm_mesh_gateway_failovers_total',
      'Requests taken off a processor that went away, restarted or stopped answering, to be tried on another.',
      () => source.failovers(),
    )
    const commit = new Histogram({
      name: 'llm_mesh_gateway_ledger_commit_seconds',
      help: "Time to write one block of usage records to the ledger's journal (one write for the records of a turn).",
      buckets: COMMIT_BUCKETS,
      registers,
    })
    this.ledgerCommit = (seconds) => commit.observe(seconds)
    new Gauge({
      name: 'llm_mesh_gateway_ledger_index_lag',
      help: "Journal blocks of usage records written but not yet in the ledger's Hyperbee index.",
      registers,
      collect() {
        this.set(source.ledgerIndexLag())
      },
    })
    this.scrapeErrors = new Counter({
      name: 'llm_mesh_gateway_processor_scrape_errors_total',
      help: "Processors whose series a scrape of this gateway's /metrics left out: they did not answer `metrics` in time.",
      registers,
    })
  }

  /** A processor's series could not be collected for a scrape. */
  scrapeFailed(): void {
    this.scrapeErrors.inc()
  }
}
