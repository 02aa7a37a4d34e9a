/**
 * Ollama's request bodies: schemas, and the one rule for fields we cannot
 * honour (see ollama-api.ts): ignored when unset, a 400 naming the field when
 * asked for.
 */
import { z } from 'zod'
import { MeshError } from '../../../kernel/errors.js'
import { MAX_LOGPROBS } from '../../../kernel/inference.js'
import type { GenerationOptions } from '../../../kernel/wire.js'
import { parseWith } from '../plumbing.js'

/** Go's JSON decoding treats null as absent; so do we. */
const optionsSchema = z
  .object({
    temperature: z.number().nullish(),
    top_k: z.number().int().nullish(),
    top_p: z.number().nullish(),
    min_p: z.number().nullish(),
    seed: z.number().int().nullish(),
    num_predict: z.number().int().nullish(),
    stop: z.union([z.string(), z.array(z.string())]).nullish(),
    repeat_penalty: z.number().nullish(),
    repeat_last_n: z.number().int().nullish(),
    presence_penalty: z.number().nullish(),
    frequency_penalty: z.number().nullish(),
    num_ctx: z.number().int().nullish(),
  })
  .nullish()

const keepAlive = z.union([z.string(), z.number()]).nullish()
const images = z.array(z.string()).nullish()
const think = z.union([z.boolean(), z.enum(['low', 'medium', 'high'])]).nullish()
const logprobs = z.boolean().nullish()
/** Ollama's debug switch: the rendered prompt instead of an answer. */
const debugRenderOnly = z.boolean().nullish()
const topLogprobs = z.number().int().min(0).max(MAX_LOGPROBS).nullish()
/** "json" or a JSON Schema; checked by `formatOf` (answer-shape.ts) for a clearer message. */
const format = z.unknown().optional()
const jsonObject = z.record(z.string(), z.unknown())

const toolSchema = z.object({
  type: z.literal('function'),
  function: z.object({
    name: z.string().min(1),
    description: z.string().nullish(),
    parameters: jsonObject.nullish(),
  }),
})

/** A call in an assistant turn replayed from history: `id` and `index` since Ollama 0.12. */
const toolCallSchema = z.object({
  id: z.string().nullish(),
  function: z.object({
    index: z.number().int().nullish(),
    name: z.string().min(1),
    arguments: jsonObject.nullish(),
  }),
})

export const generateSchema = z.object({
  prompt: z.string().nullish(),
  system: z.string().nullish(),
  raw: z.boolean().nullish(),
  stream: z.boolean().nullish(),
  options: optionsSchema,
  keep_alive: keepAlive,
  context: z.array(z.number()).nullish(),
  format,
  suffix: z.string().nullish(),
  template: z.string().nullish(),
  images,
  think,
  logprobs,
  top_logprobs: topLogprobs,
  _debug_render_only: debugRenderOnly,
})

const messageSchema = z.object({
  role: z.enum(['system', 'user', 'assistant', 'tool']),
  content: z.string().nullish(),
  images,
  tool_calls: z.array(toolCallSchema).nullish(),
  tool_name: z.string().nullish(),
  tool_call_id: z.string().nullish(),
  thinking: z.string().nullish(),
})

export const chatSchema = z.object({
  messages: z.array(messageSchema).nullish(),
  stream: z.boolean().nullish(),
  options: optionsSchema,
  keep_alive: keepAlive,
  format,
  tools: z.array(toolSchema).nullish(),
  think,
  logprobs,
  top_logprobs: topLogprobs,
  _debug_render_only: debugRenderOnly,
})

export const embedSchema = z.object({
  input: z.union([z.string(), z.array(z.string())]).nullish(),
  truncate: z.boolean().nullish(),
  options: optionsSchema,
  keep_alive: keepAlive,
  dimensions: z.number().int().nullish(),
})

export const embeddingsSchema = z.object({
  prompt: z.string().nullish(),
  options: optionsSchema,
  keep_alive: keepAlive,
})

type ParsedOptions = z.output<typeof optionsSchema>
export type ParsedChat = z.output<typeof chatSchema>
export type ParsedGenerate = z.output<typeof generateSchema>

/** @throws ERR_BAD_REQUEST naming the first bad field */
export function parse<S extends z.ZodType>(schema: S, body: Record<string, unknown>): z.output<S> {
  return parseWith(schema, body, (path, message) =>
    MeshError.badRequest(path ? `invalid ${path}: ${message}` : message),
  )
}

/** Ollama's wording for a missing model. @throws ERR_BAD_REQUEST */
export function requireModel(body: Record<string, unknown>, field = 'model'): string {
  const model = body[field]
  if (model === undefined || model === null || model === '') throw MeshError.badRequest('model is required')
  if (typeof model !== 'string') throw MeshError.badRequest(`invalid ${field}: expected a string`)
  return model
}

/** A feature left unset: absent, null, false, "" or []. */
function isUnset(v: unknown): boolean {
  return v === undefined || v === null || v === false || v === '' || (Array.isArray(v) && v.length === 0)
}

/**
 * @param prefix names the fields in the message, e.g. `messages.0.`
 * @throws ERR_UNSUPPORTED for the first of `fields` in `req` that asks for a feature this server lacks
 */
export function rejectUnsupported<T>(req: T, fields: ReadonlyArray<keyof T & string>, prefix = ''): void {
  for (const name of fields) {
    if (!isUnset(req[name])) throw MeshError.unsupported(`${prefix}${name}`)
  }
}

export const UNSUPPORTED_IN_GENERATE = ['suffix', 'template', 'images', '_debug_render_only'] as const
export const UNSUPPORTED_IN_CHAT = ['_debug_render_only'] as const
export const UNSUPPORTED_IN_MESSAGE = ['images'] as const
export const UNSUPPORTED_IN_EMBED = ['dimensions'] as const

export function toGenerationOptions(o: ParsedOptions): GenerationOptions | undefined {
  if (!o) return undefined
  const out: GenerationOptions = {}
  if (o.temperature != null) out.temperature = o.temperature
  if (o.top_k != null) out.top_k = o.top_k
  if (o.top_p != null) out.top_p = o.top_p
  if (o.min_p != null) out.min_p = o.min_p
  if (o.seed != null) out.seed = o.seed
  if (o.num_predict != null) out.num_predict = o.num_predict
  if (o.stop != null) out.stop = typeof o.stop === 'string' ? [o.stop] : o.stop
  if (o.repeat_penalty != null) out.repeat_penalty = o.repeat_penalty
  if (o.repeat_last_n != null) out.repeat_last_n = o.repeat_last_n
  if (o.presence_penalty != null) out.presence_penalty = o.presence_penalty
  if (o.frequency_penalty != null) out.frequency_penalty = o.frequency_penalty
  if (o.num_ctx != null) out.num_ctx = o.num_ctx
  return Object.keys(out).length > 0 ? out : undefined
}
