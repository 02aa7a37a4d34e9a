import type { HttpMetrics } from '../../facilities/http/observed.js'
import { GatewayMetrics } from '../../facilities/metrics/gateway-metrics.js'
import { createMetricsRegistry } from '../../facilities/metrics/registry.js'
import type { MethodTable } from '../../facilities/net/rpc-server.js'
import type { RouterFacility } from '../../facilities/router/router.facility.js'
import { MeshError } from '../../kernel/errors.js'

/** RPC methods counted as requests: the inference ones. */
const COUNTED_RPC = ['infer', 'embed'] as const

/**
 * The gateway's metrics and their hooks: its own registry, the HTTP layer's view of them
 * (`http`, also serving the scrape), RPC inference calls (`rpc`) and answered tokens (`counted`).
 */
export class GatewayObservability {
  readonly register = createMetricsRegistry()
  readonly metrics: GatewayMetrics
  readonly http: HttpMetrics

  constructor(router: () => RouterFacility | null) {
    this.metrics = new GatewayMetrics(this.register, {
      *processorStates() {
        for (const p of router()?.list() ?? []) yield p.state
      },
      isKnownModel: (model) => router()?.knowsModel(model) ?? false,
    })
    const { metrics, register } = this
    this.http = {
      request: (api, code, seconds) => metrics.request(api, code, seconds),
      firstToken: (api, seconds) => metrics.firstToken(api, seconds),
      text: () => register.metrics(),
      contentType: register.contentType,
    }
  }

  /** `table` with its inference methods counted under `api="rpc"`. */
  rpc(table: MethodTable): MethodTable {
    const { metrics } = this
    for (const name of COUNTED_RPC) {
      const handler = table[name]
      if (!handler) continue
      table[name] = async (payload, ctx) => {
        const started = performance.now()
        try {
          const result = await handler(payload, ctx)
          metrics.request('rpc', 'ok', (performance.now() - started) / 1000)
          return result
        } catch (err) {
          metrics.request('rpc', MeshError.from(err).code, (performance.now() - started) / 1000)
          throw err
        }
      }
    }
    return table
  }

  /** Counts the tokens of `answer` once it resolves; the same answer, or its failure. */
  async counted<T extends { promptTokens: number; completionTokens?: number }>(
    model: string,
    answer: Promise<T>,
  ): Promise<T> {
    const result = await answer
    this.metrics.tokens(model, result.promptTokens, result.completionTokens ?? 0)
    return result
  }
}
