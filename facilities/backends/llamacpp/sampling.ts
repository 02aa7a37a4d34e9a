/** Ollama-style sampling options, validated and turned into node-llama-cpp's terms. */
import { MeshError } from '../../../kernel/errors.js'
import { isRecord } from '../../../kernel/util.js'

/** Ollama's sampling defaults, so a request samples alike whichever backend serves it. */
const DEFAULT_TEMPERATURE = 0.8
const DEFAULT_TOP_K = 40
const DEFAULT_TOP_P = 0.9
const DEFAULT_MIN_P = 0
const DEFAULT_REPEAT_PENALTY = 1.1
const REPEAT_LAST_N = 64
const MAX_STOP_SEQUENCES = 16
/** Bound of `presence_penalty` and `frequency_penalty`, as OpenAI's. */
const MAX_ADDED_PENALTY = 2
/** Column width of `showModel().parameters`, as Ollama prints them. */
const PARAMETER_KEY_WIDTH = 30

/** The penalties on tokens already generated: multiplied (`penalty`), or subtracted per presence and per use. */
export interface RepeatPenalty {
  penalty: number
  presencePenalty: number
  frequencyPenalty: number
  lastTokens: number
}

/** Sampling and limits after validation, in node-llama-cpp's terms. */
export interface SamplingPlan {
  temperature: number
  topK: number
  topP: number
  minP: number
  seed: number | undefined
  /** node-llama-cpp's repeat penalty: over the last `lastTokens` generated tokens; false: none. */
  repeatPenalty: false | RepeatPenalty
  /** undefined: up to the context size. */
  maxTokens: number | undefined
  stop: string[]
}

function numberOption(
  options: Record<string, unknown>,
  key: string,
  check: (n: number) => boolean,
  rule: string,
): number | undefined {
  const v = options[key]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'number' || !Number.isFinite(v) || !check(v)) {
    throw MeshError.badRequest(`options.${key} must be ${rule}`, { option: key })
  }
  return v
}

function stopOption(stop: unknown): string[] {
  if (stop === undefined || stop === null) return []
  if (!Array.isArray(stop) || !stop.every((s) => typeof s === 'string')) {
    throw MeshError.badRequest('options.stop must be an array of strings', { option: 'stop' })
  }
  if (stop.length > MAX_STOP_SEQUENCES) {
    throw MeshError.badRequest(`options.stop takes at most ${MAX_STOP_SEQUENCES} strings`, {
      option: 'stop',
    })
  }
  // An empty stop string would match before the first token.
  return (stop as string[]).filter((s) => s.length > 0)
}

/**
 * The penalties of Ollama's options (`repeat_penalty`, `presence_penalty`, `frequency_penalty`
 * over the last `repeat_last_n` tokens: -1 the whole context, 0 none), or false when they
 * change nothing. @throws ERR_BAD_REQUEST
 */
function penaltyOptions(o: Record<string, unknown>, contextSize: number): false | RepeatPenalty {
  const penalty = numberOption(o, 'repeat_penalty', (n) => n > 0, 'a number > 0') ?? DEFAULT_REPEAT_PENALTY
  const inRange = (n: number) => n >= -MAX_ADDED_PENALTY && n <= MAX_ADDED_PENALTY
  const rule = `a number from -${MAX_ADDED_PENALTY} to ${MAX_ADDED_PENALTY}`
  const presencePenalty = numberOption(o, 'presence_penalty', inRange, rule) ?? 0
  const frequencyPenalty = numberOption(o, 'frequency_penalty', inRange, rule) ?? 0
  const lastN = numberOption(o, 'repeat_last_n', (n) => Number.isInteger(n) && n >= -1, 'an integer >= -1')
  const lastTokens = lastN === undefined ? REPEAT_LAST_N : lastN === -1 ? contextSize : lastN
  if (lastTokens === 0 || (penalty === 1 && presencePenalty === 0 && frequencyPenalty === 0)) return false
  return { penalty, presencePenalty, frequencyPenalty, lastTokens }
}

/**
 * Validates Ollama-style options and fills in the defaults; `contextSize` is what
 * `repeat_last_n: -1` looks back on. @throws ERR_BAD_REQUEST
 */
export function planSampling(raw: unknown, contextSize: number): SamplingPlan {
  if (raw !== undefined && raw !== null && !isRecord(raw))
    throw MeshError.badRequest('options must be an object')
  const o = (raw ?? {}) as Record<string, unknown>
  const temperature = numberOption(o, 'temperature', (n) => n >= 0, 'a number >= 0')
  const topK = numberOption(o, 'top_k', (n) => Number.isInteger(n) && n >= 0, 'an integer >= 0')
  const topP = numberOption(o, 'top_p', (n) => n >= 0 && n <= 1, 'a number from 0 to 1')
  const minP = numberOption(o, 'min_p', (n) => n >= 0 && n <= 1, 'a number from 0 to 1')
  const seed = numberOption(o, 'seed', Number.isSafeInteger, 'an integer')
  const numPredict = numberOption(o, 'num_predict', (n) => Number.isInteger(n) && n >= -2, 'an integer >= -2')
  // The context is shared by every request on a model, so a per-request num_ctx is checked but not applied.
  numberOption(o, 'num_ctx', (n) => Number.isInteger(n) && n > 0, 'an integer > 0')
  const stop = stopOption(o.stop)
  return {
    temperature: temperature ?? DEFAULT_TEMPERATURE,
    topK: topK ?? DEFAULT_TOP_K,
    topP: topP ?? DEFAULT_TOP_P,
    minP: minP ?? DEFAULT_MIN_P,
    // Ollama treats a negative seed as "random"; llama.cpp samplers take a u32.
    seed: seed === undefined || seed < 0 ? undefined : seed % 2 ** 32,
    repeatPenalty: penaltyOptions(o, contextSize),
    maxTokens: numPredict === undefined || numPredict < 0 ? undefined : numPredict,
    stop,
  }
}

/** The options of LlamaChat/LlamaCompletion for a plan, on a context of `contextSize` tokens. */
export function samplingOptions(plan: SamplingPlan, contextSize: number) {
  return {
    temperature: plan.temperature,
    topK: plan.topK,
    topP: plan.topP,
    minP: plan.minP,
    seed: plan.seed,
    repeatPenalty: plan.repeatPenalty,
    // Unbounded generation would hold a sequence forever on a model that never says EOS.
    maxTokens: plan.maxTokens ?? contextSize,
    customStopTriggers: plan.stop,
  }
}

/** `showModel().parameters`: the context size and the sampling defaults, in Ollama's layout. */
export function defaultParameters(contextSize: number): string {
  return [
    ['num_ctx', String(contextSize)],
    ['temperature', String(DEFAULT_TEMPERATURE)],
    ['top_k', String(DEFAULT_TOP_K)],
    ['top_p', String(DEFAULT_TOP_P)],
    ['repeat_penalty', String(DEFAULT_REPEAT_PENALTY)],
    ['repeat_last_n', String(REPEAT_LAST_N)],
  ]
    .map(([k, v]) => `${k.padEnd(PARAMETER_KEY_WIDTH)} ${v}`)
    .join('\n')
}
