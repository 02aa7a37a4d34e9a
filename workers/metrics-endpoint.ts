import type { Logger } from '../facilities/log.facility.js'
import { type Exposition, MetricsHttpFacility } from '../facilities/metrics/metrics-http.facility.js'
import type { Health } from '../kernel/wire.js'
import type { FacilitySpec } from './base.worker.js'

/** Where a worker's own `GET /metrics` listens (`metrics` in its config); `port` null: nowhere. */
export interface MetricsEndpointConfig {
  host: string
  port: number | null
}

/** A worker's own `/metrics` port (`metrics.port`, with `/healthz` and `/readyz`): its facility, and its URL once it listens. */
export class MetricsEndpoint {
  private endpoint: MetricsHttpFacility | null = null

  constructor(
    private readonly config: MetricsEndpointConfig,
    private readonly exposition: Exposition,
    private readonly log: () => Logger,
  ) {}

  /** The facility to declare: none without a port; after the role's own, so a scrape finds them open. */
  facilities(health?: () => Promise<Health>): FacilitySpec[] {
    const { host, port } = this.config
    if (port === null) return []
    return [
      {
        name: 'metrics-http',
        priority: 70,
        create: () => {
          this.endpoint = new MetricsHttpFacility({
            host,
            port,
            exposition: this.exposition,
            logger: this.log(),
            health,
          })
          return this.endpoint
        },
      },
    ]
  }

  /** E.g. http://127.0.0.1:9464/metrics; null without a port or before it listens. */
  get url(): string | null {
    try {
      return this.endpoint?.url ?? null
    } catch {
      return null
    }
  }
}
