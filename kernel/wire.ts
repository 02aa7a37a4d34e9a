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
  /** An assistant turn's reasoning, replayed from history. */
  thinking?: string
  /** An assistant turn's calls of the request's tools. */
  toolCalls?: ToolCall[]
  /** A `tool` turn: the call it answers (OpenAI's `tool_call_id`). */
  toolCallId?: string
  /** A `tool` turn: the function that answered (Ollama's `tool_name`). */
  toolName?: string
}

/** A JSON Schema, as the caller wrote it. */
export type JsonSchema = Record<string, unknown>

/**
 * A function the model may call: OpenAI's and Ollama's `tools[]` entry. `strict`: the call's
 * arguments must follow `parameters` exactly (OpenAI's); a backend that cannot promise it refuses it.
 */
export interface ToolDefinition {
  type: 'function'
  function: { name: string; description?: string; parameters?: JsonSchema; strict?: boolean }
}

/**
 * A call the model made. Arguments as an object (Ollama's form; OpenAI's string is its JSON).
 * The id is the backend's, or made by whoever first saw the call without one.
 */
export interface ToolCall {
  id: string
  name: string
  arguments: Record<string, unknown>
}

/** Whether the model may (`auto`), must not (`none`), must (`required`) or must call this one function. */
export type ToolChoice = 'auto' | 'none' | 'required' | { name: string }

/** An answer that must be JSON: any JSON object, or JSON valid against `schema`. */
export interface OutputFormat {
  type: 'json'
  schema?: JsonSchema
}

/** Reasoning asked for: on or off, or an effort. */
export type ThinkSetting = boolean | 'low' | 'medium' | 'high'

export interface TokenLogprobBase {
  token: string
  logprob: number
  /** UTF-8 bytes of the token (a token may hold part of a character). */
  bytes?: number[]
}

/** One generated token's log probability, with the most likely alternatives when asked for. */
export interface TokenLogprob extends TokenLogprobBase {
  top?: TokenLogprobBase[]
}

/** What changes the kind of answer, for chat and generate alike. */
export interface AnswerShape {
  format?: OutputFormat
  think?: ThinkSetting
  /** Log probabilities of the generated tokens, with this many alternatives each. */
  logprobs?: number
  /**
   * Choices to generate (default 1). A gateway fans them out, each on its own processor
   * when several serve the model; a backend generates one and never sees this.
   */
  n?: number
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
  /** Tokens looked back on by the penalties (-1: the whole context). */
  repeat_last_n?: number
  presence_penalty?: number
  frequency_penalty?: number
  num_ctx?: number
}

export interface ChatRequest extends AnswerShape {
  model: string
  messages: ChatMessage[]
  options?: GenerationOptions
  tools?: ToolDefinition[]
  /** Default `auto` with tools. */
  toolChoice?: ToolChoice
  /** Whether the model may make several calls in one turn (default true). */
  parallelToolCalls?: boolean
}

export interface GenerateRequest extends AnswerShape {
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
  /** Reasoning, apart from the answer (`think`). Streamed answers carried it in deltas. */
  thinking?: string
  /** The calls the model made, streamed or not (a stream also carried each in a delta). */
  toolCalls?: ToolCall[]
  /** Per generated token (`logprobs`). Streamed answers carried them in deltas. */
  logprobs?: TokenLogprob[]
  /**
   * With `n` > 1: every choice, in index order (the first is also the result's own `text`,
   * `doneReason`…); the result's counts are the sums over them.
   */
  choices?: ChoiceResult[]
}

/** One of `n` choices. */
export interface ChoiceResult
  extends Pick<GenerationResult, 'text' | 'doneReason' | 'thinking' | 'toolCalls' | 'logprobs'> {
  index: number
  promptTokens: number
  completionTokens: number
  /** Hex key of the processor that generated it (set by the gateway). */
  processor?: string
}

/** What a stream carries besides the answer's text: reasoning, finished tool calls, log probabilities. */
export interface GenerationDelta {
  /** The choice it belongs to, with `n` > 1 (absent: 0). */
  index?: number
  thinking?: string
  toolCalls?: ToolCall[]
  logprobs?: TokenLogprob[]
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
  /** Through a gateway: how many processors hold the model, and how many have it loaded. */
  held?: number
  loaded?: number
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
  /** Called with each piece of text as the model produces it, in order; `index`: its choice, with `n` > 1. */
  onToken?: (text: string, index?: number) => void
  /** Called with reasoning, tool calls and log probabilities as they come (only when asked for). */
  onDelta?: (delta: GenerationDelta) => void
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
  /** Ollama's /api/delete (admins, where a source allows it). @throws ERR_MODEL_NOT_FOUND, ERR_FORBIDDEN */
  deleteModel?(name: string): Promise<void>
  /** Ollama's /api/copy (admins, where a source allows it). @throws ERR_MODEL_NOT_FOUND, ERR_FORBIDDEN */
  copyModel?(source: string, destination: string): Promise<void>
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
  /** Models it has loaded in memory (absent: it does not report them). */
  loaded?: string[]
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
