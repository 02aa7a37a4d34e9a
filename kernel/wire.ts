import type { CancelToken } from './cancel.js'

/**
 * Wire types shared by backends, the Ollama-compatible route layer, RPC
 * methods and the client library. Field names follow Ollama's API where one
 * exists (options.num_predict, done_reason) so the HTTP layers map 1:1.
 */

export type ChatRole = 'system' | 'user' | 'assistant' | 'tool'

export interface ChatMessage {
  role: ChatRole
  content: string
}

/** Sampling options, Ollama names. All optional; backends apply their defaults. */
export interface GenerationOptions {
  temperature?: number
  top_k?: number
  top_p?: number
  min_p?: number
  seed?: number
  /** Maximum tokens to generate (-1 or absent: backend default). */
  num_predict?: number
  stop?: string[]
  repeat_penalty?: number
  num_ctx?: number
}

export interface ChatRequest {
  model: string
  messages: ChatMessage[]
  options?: GenerationOptions
}

export interface GenerateRequest {
  model: string
  prompt: string
  system?: string
  /** When true the prompt is fed to the model as is, with no chat template. */
  raw?: boolean
  options?: GenerationOptions
}

export interface EmbedRequest {
  model: string
  input: string[]
  truncate?: boolean
}

export type DoneReason = 'stop' | 'length' | 'cancelled'

/** Counts and timings of one generation. Durations in milliseconds. */
export interface GenerationStats {
  promptTokens: number
  completionTokens: number
  totalMs: number
  loadMs: number
  promptEvalMs: number
  evalMs: number
}

export interface GenerationResult extends GenerationStats {
  text: string
  doneReason: DoneReason
}

export interface EmbedResult {
  embeddings: number[][]
  promptTokens: number
  totalMs: number
  loadMs: number
}

export interface ModelDetailsSummary {
  format: string
  family: string
  families: string[]
  parameterSize: string
  quantizationLevel: string
}

export interface ModelInfo {
  name: string
  size: number
  digest: string
  /** ISO 8601 */
  modifiedAt: string
  details: ModelDetailsSummary
}

export interface ModelDetails extends ModelInfo {
  template: string
  parameters: string
  modelInfo: Record<string, unknown>
  capabilities: string[]
}

export interface RunningModel extends ModelInfo {
  /** ISO 8601 */
  expiresAt: string
  sizeVram: number
}

/**
 * How a caller stops a request: an AbortSignal, or a CancelToken, which costs
 * far less to make and watch on a hot path (the HTTP front and the processor
 * pass one); a source that needs a real signal takes `signalOf(cb)`, made on
 * first use.
 */
export interface Cancellable {
  signal?: AbortSignal
  cancel?: CancelToken
}

export interface GenerateCallbacks extends Cancellable {
  /** Called with each piece of text as the model produces it, in order. */
  onToken?: (text: string) => void
}

/**
 * Anything that can answer inference requests: a local backend, or the mesh
 * seen from a gateway. The Ollama-compatible HTTP layer serves any of them.
 *
 * Errors: ERR_MODEL_NOT_FOUND for an unknown model, ERR_BAD_REQUEST for bad
 * input, ERR_CANCELLED when the signal aborts before anything was produced,
 * ERR_BACKEND_UNAVAILABLE when the engine cannot be reached.
 */
export interface InferenceSource {
  listModels(): Promise<ModelInfo[]>
  showModel(name: string): Promise<ModelDetails>
  chat(req: ChatRequest, cb?: GenerateCallbacks): Promise<GenerationResult>
  generate(req: GenerateRequest, cb?: GenerateCallbacks): Promise<GenerationResult>
  embed(req: EmbedRequest, cb?: Cancellable): Promise<EmbedResult>
  runningModels(): Promise<RunningModel[]>
}

/** A processor's `status` request and its short reply, the beat: versioned status (status-beat.ts). */
export type { StatusBeat, StatusRequest } from './status-beat.js'

export type BreakerState = 'closed' | 'open' | 'half-open'

/**
 * A processor's standing with this gateway: serving; draining (stopping: it finishes what it
 * runs and is sent nothing new); unreachable (no answer, or its connection closed: it is
 * re-dialled with backoff and sent nothing new, and dropped after `goneAfterMs`).
 */
export type ProcessorState = 'serving' | 'draining' | 'unreachable'

export interface ProcessorView {
  publicKey: string
  state: ProcessorState
  models: string[]
  capacity: number
  active: number
  queued: number
  inflight: number
  weight: number
  backend: string
  tokensPerSecond: number
  ttftMs: number | null
  measuredTokensPerSecond: number | null
  served: number
  failures: number
  breaker: BreakerState
  lastSeenMs: number
  /** Whether the gateway reaches it through a blind relay (hole-punching could not). */
  relayed: boolean
}

/** One thing a worker's readiness depends on (its store, its processors, its backend…). */
export interface HealthCheck {
  name: string
  ok: boolean
  /** Why it is not ok, or what it found ("2 of 3 processors serving"). */
  detail: string
}

/**
 * A worker's health (`GET /healthz`, `GET /readyz`, RPC `health`): alive whenever it answers;
 * ready when every check holds and it is not stopping or drained for maintenance, i.e. when
 * sending it new work makes sense.
 */
export interface Health {
  role: string
  alive: true
  ready: boolean
  /** Stopping, or drained for maintenance: finishing what it runs, taking nothing new. */
  draining: boolean
  checks: HealthCheck[]
}
