import type { Registry } from 'prom-client'
import type { Logger } from '../../facilities/log.facility.js'
import type { MetricFamily } from '../../facilities/metrics/exposition.js'
import {
  PROCESSOR_PREFIX,
  ProcessorMetrics,
  type ProcessorMetricsSource,
} from '../../facilities/metrics/processor-metrics.js'
import type { MethodTable } from '../../facilities/net/rpc-server.js'
import type { ProcessorConfig } from '../../kernel/config.js'
import { MeshError } from '../../kernel/errors.js'
import type { GenerationStats, Health } from '../../kernel/wire.js'
import type { FacilitySpec } from '../base.worker.js'
import { MetricsEndpoint } from '../metrics-endpoint.js'

/** What the `metrics` RPC method answers: the processor's own series (not the process's). */
export interface ProcessorMetricsReply {
  metrics: MetricFamily[]
}

/**
 * One generation, timed from its arrival: `token()` notes the first streamed token, then
 * `answered()` or `failed()` ends it (once).
 */
export class GenerationTimer {
  private readonly started = performance.now()
  private firstAt = 0

  constructor(
    private readonly metrics: ProcessorMetrics,
    private readonly model: string,
  ) {}

  /** A streamed token goes out. */
  token(): void {
    if (this.firstAt === 0) this.firstAt = performance.now()
  }

  answered(result: GenerationStats): void {
    const now = performance.now()
    const seconds = (now - this.started) / 1000
    // A whole answer has no first token to see: its time to it is the time not spent generating.
    const first = this.firstAt > 0 ? (this.firstAt - this.started) / 1000 : seconds - result.evalMs / 1000
    this.metrics.answered({
      model: this.model,
      promptTokens: result.promptTokens,
      completionTokens: result.completionTokens,
      seconds,
      firstTokenSeconds: Math.max(0, first),
    })
  }

  failed(err: unknown): void {
    const code = MeshError.from(err).code
    // A caller that cancelled, or went away, is not the backend failing.
    this.metrics.failed(code, code !== 'ERR_CANCELLED')
  }
}

/**
 * A processor's metrics: its series in the worker's registry, its own `/metrics` endpoint when
 * `metrics.port` is set, and the `metrics` RPC method through which gateways collect them
 * (only gateways reach it: the firewall admits no one else).
 */
export class ProcessorObservability {
  readonly metrics: ProcessorMetrics
  private readonly endpoint: MetricsEndpoint

  constructor(
    private readonly register: Registry,
    config: ProcessorConfig,
    log: () => Logger,
    source: ProcessorMetricsSource,
  ) {
    this.metrics = new ProcessorMetrics(register, source)
    this.endpoint = new MetricsEndpoint(
      config.metrics,
      { text: () => register.metrics(), contentType: register.contentType },
      log,
    )
  }

  /** Times one generation of `model`, starting now. */
  generation(model: string): GenerationTimer {
    return new GenerationTimer(this.metrics, model)
  }

  /** `work` (a backend call but a generation: an embedding), its failure counted as a backend error. */
  async backendCall<T>(work: Promise<T>): Promise<T> {
    try {
      return await work
    } catch (err) {
      const { code } = MeshError.from(err)
      if (code !== 'ERR_CANCELLED') this.metrics.backendError(code)
      throw err
    }
  }

  /** The `/metrics` endpoint, when `metrics.port` is set. */
  facilities(health: () => Promise<Health>): FacilitySpec[] {
    return this.endpoint.facilities(health)
  }

  methods(): MethodTable {
    return { metrics: () => this.reply() }
  }

  /** `status` fields: where its `/metrics` is, when it has one. */
  statusInfo(): { metricsUrl?: string } {
    const url = this.endpoint.url
    return url ? { metricsUrl: url } : {}
  }

  /** Its own series as JSON, without the process's: small enough to collect at every scrape. */
  async reply(): Promise<ProcessorMetricsReply> {
    const own = this.register
      .getMetricsAsArray()
      .filter((m) => m.name.startsWith(PROCESSOR_PREFIX)) as unknown as { get(): Promise<MetricFamily> }[]
    return { metrics: await Promise.all(own.map((m) => m.get())) }
  }
}
