import type { Registry } from 'prom-client'
import type { HttpMetrics } from '../../facilities/http/observed.js'
import type { Logger } from '../../facilities/log.facility.js'
import { GatewayMetrics, LIMITS, type LimitLabel } from '../../facilities/metrics/gateway-metrics.js'
import { GatewayRoutingMetrics } from '../../facilities/metrics/gateway-routing-metrics.js'
import type { NetFacility } from '../../facilities/net/net.facility.js'
import type { CallContext, MethodTable } from '../../facilities/net/rpc-server.js'
import type { RouterFacility } from '../../facilities/router/router.facility.js'
import type { UsageFacility } from '../../facilities/usage/usage.facility.js'
import { MeshError } from '../../kernel/errors.js'
import type { Health } from '../../kernel/wire.js'
import type { FacilitySpec } from '../base.worker.js'
import { MetricsEndpoint, type MetricsEndpointConfig } from '../metrics-endpoint.js'
import type { Spent } from './choices.js'
import type { Sink } from './inference-pipeline.js'
import { scrapeProcessors } from './mesh-scrape.js'

/** RPC methods counted as requests: the inference ones. */
const COUNTED_RPC = new Set(['infer', 'embed'])

/** What the gateway's metrics read from the worker, each null while it is not open. */
export interface GatewayParts {
  router(): RouterFacility | null
  net(): NetFacility | null
  /** Retries and failovers so far (the inference pipeline's counts). */
  pipeline(): { retries: number; failovers: number }
  usage(): UsageFacility | null
}

/** When a counted RPC call was first handed to a processor, and when the answer came back. */
interface RpcTiming {
  dispatched: number
  answered: number
}

/**
 * The gateway's metrics and their hooks: its series in the worker's registry, the HTTP layer's
 * view of them (`http`, also serving the scrape: the gateway's own series, then every live
 * processor's, collected over RPC), RPC calls (`rpc`), answered tokens and refusals by a limit
 * (`counted`), the fair queue's waits and the ledger's commits (`routing`).
 */
export class GatewayObservability {
  readonly metrics: GatewayMetrics
  readonly routing: GatewayRoutingMetrics
  readonly http: HttpMetrics
  /** Timings of RPC calls being answered, by call. */
  private readonly rpcTimings = new WeakMap<CallContext, RpcTiming>()

  constructor(
    readonly register: Registry,
    parts: GatewayParts,
  ) {
    const router = () => parts.router()
    this.metrics = new GatewayMetrics(register, {
      *processorStates() {
        for (const p of router()?.list() ?? []) yield p.state
      },
      isKnownModel: (model) => router()?.knowsModel(model) ?? false,
    })
    this.routing = new GatewayRoutingMetrics(register, {
      *breakerStates() {
        for (const p of router()?.list() ?? []) yield p.breaker
      },
      queued: () => router()?.queued ?? 0,
      retries: () => parts.pipeline().retries,
      failovers: () => parts.pipeline().failovers,
      ledgerIndexLag: () => parts.usage()?.indexLag ?? 0,
    })
    const { metrics, routing } = this
    this.http = {
      request: (api, code, seconds) => metrics.request(api, code, seconds),
      firstToken: (api, seconds) => metrics.firstToken(api, seconds),
      overhead: (api, seconds) => metrics.overhead(api, seconds),
      text: async () => {
        // The processors first: this scrape's own series count the ones that did not answer.
        const mesh = await scrapeProcessors(parts.router(), parts.net(), () => routing.scrapeFailed())
        return (await register.metrics()) + mesh
      },
      contentType: register.contentType,
    }
  }

  /** A `/metrics` port of its own (`metrics.port`), serving what the HTTP port's `/metrics` does. */
  facilities(
    config: MetricsEndpointConfig,
    log: () => Logger,
    health: () => Promise<Health>,
  ): FacilitySpec[] {
    return new MetricsEndpoint(config, this.http, log).facilities(health)
  }

  /**
   * `table` with its inference methods counted under `api="rpc"` (outcome, duration, the
   * gateway's own time), and every other method's credential refusals counted as auth failures.
   */
  rpc(table: MethodTable): MethodTable {
    for (const [name, handler] of Object.entries(table)) {
      table[name] = COUNTED_RPC.has(name) ? this.countedCall(handler) : this.authWatched(handler)
    }
    return table
  }

  private countedCall(handler: MethodTable[string]): MethodTable[string] {
    const { metrics, rpcTimings } = this
    return async (payload, ctx) => {
      const started = performance.now()
      const timing: RpcTiming = { dispatched: 0, answered: 0 }
      rpcTimings.set(ctx, timing)
      try {
        const result = await handler(payload, ctx)
        const ended = performance.now()
        metrics.request('rpc', 'ok', (ended - started) / 1000)
        if (timing.dispatched > 0 && timing.answered > 0)
          metrics.overhead('rpc', (timing.dispatched - started + ended - timing.answered) / 1000)
        return result
      } catch (err) {
        metrics.request('rpc', MeshError.from(err).code, (performance.now() - started) / 1000)
        throw err
      }
    }
  }

  private authWatched(handler: MethodTable[string]): MethodTable[string] {
    const { metrics } = this
    return async (payload, ctx) => {
      try {
        return await handler(payload, ctx)
      } catch (err) {
        const { code } = MeshError.from(err)
        if (GatewayMetrics.isAuthFailure(code)) metrics.authFailure(code)
        throw err
      }
    }
  }

  /** The hooks of an RPC call's sink that time its hand-off to a processor and its answer. */
  rpcSink(ctx: CallContext): Pick<Sink, 'onDispatch' | 'onAnswer'> {
    const timing = this.rpcTimings.get(ctx)
    if (!timing) return {}
    return {
      onDispatch: () => {
        if (timing.dispatched === 0) timing.dispatched = performance.now()
      },
      onAnswer: () => {
        timing.answered = performance.now()
      },
    }
  }

  /**
   * Counts the tokens of `answer` once it resolves, or when it fails, the limit that refused it
   * and the tokens `spent` says ran; the same answer, or its failure.
   */
  async counted<T extends { promptTokens: number; completionTokens?: number }>(
    model: string,
    answer: Promise<T>,
    spent?: Spent,
  ): Promise<T> {
    let result: T
    try {
      result = await answer
    } catch (err) {
      const limit = limitOf(err)
      if (limit) this.metrics.limitRejected(limit)
      if (spent && spent.promptTokens + spent.completionTokens > 0)
        this.metrics.tokens(model, spent.promptTokens, spent.completionTokens)
      throw err
    }
    this.metrics.tokens(model, result.promptTokens, result.completionTokens ?? 0)
    return result
  }
}

/** The limit a refusal names, or null when `err` is no limit's refusal. */
function limitOf(err: unknown): LimitLabel | null {
  if (!(err instanceof MeshError)) return null
  if (err.code === 'ERR_BUSY') return err.details?.queued !== undefined ? 'queue' : null
  if (err.code !== 'ERR_RATE_LIMITED' && err.code !== 'ERR_QUOTA_EXCEEDED') return null
  const limit = err.details?.limit
  return (LIMITS as readonly unknown[]).includes(limit) && limit !== 'queue' ? (limit as LimitLabel) : null
}
