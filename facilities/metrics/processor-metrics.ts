import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import { ERROR_CODES } from '../../kernel/errors.js'
import { TokenCounter } from './labels.js'

/** Every processor series starts with this: what a gateway collects of a processor. */
export const PROCESSOR_PREFIX = 'llm_mesh_processor_'
/** Generation durations, from an instant answer to a long one. */
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
/** Time to a generation's first token. */
const FIRST_TOKEN_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
/** Loading a model: milliseconds for a tiny one, minutes for a large one from a slow disk. */
const LOAD_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]

/** What the processor's gauges read at scrape time. */
export interface ProcessorMetricsSource {
  inflight(): number
  capacity(): number
  queued(): number
  /** Whether it is in maintenance (drained): gateways send it nothing new. */
  draining(): boolean
  /** Its running estimate of completion tokens per second. */
  tokensPerSecond(): number
  /** Models in memory now (rejects: the gauge keeps its last value). */
  modelsLoaded(): Promise<number>
  /** Whether the backend serves `model`. */
  isKnownModel(model: string): boolean
}

/** One finished generation. */
export interface GenerationOutcome {
  model: string
  promptTokens: number
  completionTokens: number
  /** From the call's arrival to its answer. */
  seconds: number
  /** From the call's arrival to the first token. */
  firstTokenSeconds: number
}

type Child = { inc(n?: number): void }

/**
 * A processor's series, in the worker's registry. Labels are bounded: an outcome or error
 * code (the closed set of MeshError codes), a token kind, and a model the backend serves
 * (else `other`). Children are bound once and kept.
 */
export class ProcessorMetrics {
  private readonly generations: Counter<'outcome'>
  private readonly outcomeChildren = new Map<string, Child>()
  private readonly backendErrors: Counter<'code'>
  private readonly errorChildren = new Map<string, Child>()
  private readonly tokens: TokenCounter
  private readonly firstToken: Histogram
  private readonly duration: Histogram
  private readonly load: Histogram

  constructor(register: Registry, source: ProcessorMetricsSource) {
    const registers = [register]
    gauges(register, source)
    this.generations = new Counter({
      name: 'llm_mesh_processor_generations_total',
      help: 'Generations this processor ran, by outcome (ok, or the MeshError code it failed with).',
      labelNames: ['outcome'],
      registers,
    })
    this.backendErrors = new Counter({
      name: 'llm_mesh_processor_backend_errors_total',
      help: 'Generations and embeddings the backend failed, by MeshError code (a caller cancelling is not one).',
      labelNames: ['code'],
      registers,
    })
    this.tokens = new TokenCounter(
      'llm_mesh_processor_tokens_total',
      'Tokens of generations answered, by kind (prompt, completion) and model (other: not served).',
      register,
      (m) => source.isKnownModel(m),
    )
    this.firstToken = new Histogram({
      name: 'llm_mesh_processor_time_to_first_token_seconds',
      help: "Time from a generation's arrival to its first token (whole answers: to the answer, less the time spent generating).",
      buckets: FIRST_TOKEN_BUCKETS,
      registers,
    })
    this.duration = new Histogram({
      name: 'llm_mesh_processor_generation_duration_seconds',
      help: "Time from a generation's arrival to its answer, for generations answered.",
      buckets: DURATION_BUCKETS,
      registers,
    })
    this.load = new Histogram({
      name: 'llm_mesh_processor_model_load_seconds',
      help: 'Time to load a model into memory (llama.cpp backend: file and context).',
      buckets: LOAD_BUCKETS,
      registers,
    })
  }

  /** One generation answered. */
  answered(g: GenerationOutcome): void {
    this.outcome('ok').inc()
    this.duration.observe(g.seconds)
    this.firstToken.observe(g.firstTokenSeconds)
    this.tokens.add(g.model, g.promptTokens, g.completionTokens)
  }

  /** One generation failed with `code`; `byBackend`: the backend raised it (not a cancel). */
  failed(code: string, byBackend: boolean): void {
    this.outcome(boundedCode(code)).inc()
    if (byBackend) this.backendError(code)
  }

  /** The backend failed a call (a generation, or an embedding) with `code`. */
  backendError(code: string): void {
    const bounded = boundedCode(code)
    let child = this.errorChildren.get(bounded)
    if (!child) {
      child = this.backendErrors.labels(bounded)
      this.errorChildren.set(bounded, child)
    }
    child.inc()
  }

  /** A model loaded in `seconds`. */
  modelLoaded(seconds: number): void {
    this.load.observe(seconds)
  }

  private outcome(outcome: string): Child {
    let child = this.outcomeChildren.get(outcome)
    if (!child) {
      child = this.generations.labels(outcome)
      this.outcomeChildren.set(outcome, child)
    }
    return child
  }
}

/** A code outside the closed set (never expected) shares one label. */
function boundedCode(code: string): string {
  return Object.hasOwn(ERROR_CODES, code) ? code : 'ERR_INTERNAL'
}

/** The processor's gauges, each read from `source` at scrape time. */
function gauges(register: Registry, source: ProcessorMetricsSource): void {
  const gauge = (name: string, help: string, read: () => number) =>
    new Gauge({
      name,
      help,
      registers: [register],
      collect() {
        this.set(read())
      },
    })
  gauge('llm_mesh_processor_generations_in_flight', 'Generations running now.', source.inflight)
  gauge('llm_mesh_processor_capacity', 'Generations it runs at once (backend.maxParallel).', source.capacity)
  gauge('llm_mesh_processor_queued', 'Generations past its capacity, waiting in the backend.', source.queued)
  gauge(
    'llm_mesh_processor_draining',
    '1 while drained for maintenance (gateways send it nothing new), else 0.',
    () => (source.draining() ? 1 : 0),
  )
  gauge(
    'llm_mesh_processor_tokens_per_second',
    'Its running estimate (EWMA) of completion tokens per second of one generation.',
    source.tokensPerSecond,
  )
  new Gauge({
    name: 'llm_mesh_processor_models_loaded',
    help: 'Models in memory now.',
    registers: [register],
    async collect() {
      try {
        this.set(await source.modelsLoaded())
      } catch {
        // A backend that does not answer (Ollama restarting): the last value stands.
      }
    },
  })
}
