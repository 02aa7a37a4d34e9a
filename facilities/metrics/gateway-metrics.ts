import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import { ERROR_CODES } from '../../kernel/errors.js'
import { TokenCounter } from './labels.js'

/** Where a gateway request came in: an HTTP dialect (`/v1/messages`: anthropic, `/v1/responses`: responses), or RPC. */
export type GatewayApi = 'ollama' | 'openai' | 'anthropic' | 'responses' | 'rpc'

const APIS: readonly GatewayApi[] = ['ollama', 'openai', 'anthropic', 'responses', 'rpc']
const PROCESSOR_STATES = ['serving', 'draining', 'unreachable'] as const
/** Request durations, from a health probe to a long generation. */
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
/** The gateway's own time on a request: microseconds to, under load, a few hundred ms. */
const OVERHEAD_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1]
/** Codes of a caller refused for who they are: counted again under auth failures. */
const AUTH_CODES: ReadonlySet<string> = new Set(['ERR_AUTH_INVALID', 'ERR_AUTH_REQUIRED', 'ERR_FORBIDDEN'])
/** Limits a request is refused by (`details.limit` of ERR_RATE_LIMITED / ERR_QUOTA_EXCEEDED), and the queue. */
export const LIMITS = ['rpm', 'tpm', 'dailyTokens', 'monthlyTokens', 'queue'] as const
export type LimitLabel = (typeof LIMITS)[number]
/** Time to a stream's first piece of text. */
const FIRST_TOKEN_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

/** What the gateway's metrics read from its router at scrape time. */
export interface GatewayMetricsSource {
  /** The processors' states now; empty when the router is not open. */
  processorStates(): Iterable<string>
  /** Whether the mesh serves or served `model` (the router's catalog). */
  isKnownModel(model: string): boolean
}

type Child = { inc(n?: number): void }
type Observer = { observe(v: number): void }

/**
 * The gateway's series, in the worker's own registry. Every label value is bounded: the API
 * (five), a MeshError code or `ok`, a token kind, a processor state, and a model the mesh
 * serves (else `other`). Label children are bound once, so a request's hooks allocate nothing.
 */
export class GatewayMetrics {
  private readonly requests: Counter<'api' | 'code'>
  /** Bound children by API, then code. */
  private readonly requestChildren: Record<GatewayApi, Map<string, Child>> = {
    ollama: new Map(),
    openai: new Map(),
    anthropic: new Map(),
    responses: new Map(),
    rpc: new Map(),
  }
  private readonly durations: Record<GatewayApi, Observer>
  private readonly overheads: Record<GatewayApi, Observer>
  private readonly authFailures: Counter<'reason'>
  private readonly authChildren = new Map<string, Child>()
  private readonly limitChildren: Record<LimitLabel, Child>
  private readonly firstTokens: Record<GatewayApi, Observer>
  private readonly tokenCounter: TokenCounter

  constructor(register: Registry, source: GatewayMetricsSource) {
    this.requests = new Counter({
      name: 'llm_mesh_gateway_requests_total',
      help: 'Requests answered by the gateway, by API and outcome (a MeshError code, or ok).',
      labelNames: ['api', 'code'],
      registers: [register],
    })
    const duration = new Histogram({
      name: 'llm_mesh_gateway_request_duration_seconds',
      help: 'Time from a request arriving to its answer ending, by API.',
      labelNames: ['api'],
      buckets: DURATION_BUCKETS,
      registers: [register],
    })
    const firstToken = new Histogram({
      name: 'llm_mesh_gateway_time_to_first_token_seconds',
      help: "Time from a streamed request arriving to its answer's first piece of text, by API.",
      labelNames: ['api'],
      buckets: FIRST_TOKEN_BUCKETS,
      registers: [register],
    })
    this.durations = byApi((api) => duration.labels(api))
    const overhead = new Histogram({
      name: 'llm_mesh_gateway_overhead_seconds',
      help: "The gateway's own time on a request a processor answered: from its arrival to its first hand-off to a processor, plus from the processor's answer to the response's end (docs/operations.md).",
      labelNames: ['api'],
      buckets: OVERHEAD_BUCKETS,
      registers: [register],
    })
    this.overheads = byApi((api) => overhead.labels(api))
    this.authFailures = new Counter({
      name: 'llm_mesh_gateway_auth_failures_total',
      help: 'Requests refused for their credential, by reason (ERR_AUTH_REQUIRED, ERR_AUTH_INVALID, ERR_FORBIDDEN), on any API or RPC method.',
      labelNames: ['reason'],
      registers: [register],
    })
    const limits = new Counter({
      name: 'llm_mesh_gateway_limit_rejections_total',
      help: 'Inference requests refused by a limit: rpm, tpm (rate), dailyTokens, monthlyTokens (quota), queue (the wait queue full).',
      labelNames: ['limit'],
      registers: [register],
    })
    this.limitChildren = {} as Record<LimitLabel, Child>
    for (const limit of LIMITS) this.limitChildren[limit] = limits.labels(limit)
    this.firstTokens = byApi((api) => firstToken.labels(api))
    this.tokenCounter = new TokenCounter(
      'llm_mesh_gateway_tokens_total',
      'Tokens of answered requests, by kind (prompt, completion) and model (other: not served).',
      register,
      (m) => source.isKnownModel(m),
    )
    new Gauge({
      name: 'llm_mesh_gateway_processors',
      help: 'Processors this gateway knows, by state.',
      labelNames: ['state'],
      registers: [register],
      collect() {
        const counts: Record<string, number> = { serving: 0, draining: 0, unreachable: 0 }
        for (const state of source.processorStates()) counts[state] = (counts[state] ?? 0) + 1
        for (const state of PROCESSOR_STATES) this.labels(state).set(counts[state] ?? 0)
      },
    })
  }

  /** One request answered: its outcome (`ok` or a MeshError code) and how long it took. */
  request(api: GatewayApi, code: string, seconds: number): void {
    this.requestChild(api, code).inc()
    this.durations[api].observe(seconds)
    if (AUTH_CODES.has(code)) this.authFailure(code)
  }

  /** A call refused for its credential (`code`: one of AUTH_CODES), outside the counted requests. */
  authFailure(code: string): void {
    let child = this.authChildren.get(code)
    if (!child) {
      child = this.authFailures.labels(code)
      this.authChildren.set(code, child)
    }
    child.inc()
  }

  /** Whether `code` refuses a caller for its credential. */
  static isAuthFailure(code: string): boolean {
    return AUTH_CODES.has(code)
  }

  /** An inference request refused by `limit`. */
  limitRejected(limit: LimitLabel): void {
    this.limitChildren[limit].inc()
  }

  /** The gateway's own time on an answered request (see the series' help). */
  overhead(api: GatewayApi, seconds: number): void {
    this.overheads[api].observe(seconds)
  }

  /** A streamed answer's first piece of text, `seconds` after the request arrived. */
  firstToken(api: GatewayApi, seconds: number): void {
    this.firstTokens[api].observe(seconds)
  }

  /** Tokens of one answered request. */
  tokens(model: string, prompt: number, completion: number): void {
    this.tokenCounter.add(model, prompt, completion)
  }

  private requestChild(api: GatewayApi, code: string): Child {
    // Codes outside the closed set (never expected) share one label.
    const bounded = code === 'ok' || Object.hasOwn(ERROR_CODES, code) ? code : 'ERR_INTERNAL'
    const children = this.requestChildren[api]
    let child = children.get(bounded)
    if (!child) {
      child = this.requests.labels(api, bounded)
      children.set(bounded, child)
    }
    return child
  }
}

function byApi(make: (api: GatewayApi) => Observer): Record<GatewayApi, Observer> {
  const out = {} as Record<GatewayApi, Observer>
  for (const api of APIS) out[api] = make(api)
  return out
}
