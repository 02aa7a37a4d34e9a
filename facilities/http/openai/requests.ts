/** OpenAI's request bodies: schemas, and what we refuse because it would change the kind of answer. */
import { z } from 'zod'
import { MeshError } from '../../../kernel/errors.js'
import type { GenerationOptions } from '../../../kernel/wire.js'
import { parseWith } from '../plumbing.js'
import { unsupported } from './errors.js'

const textPart = z.object({ type: z.literal('text'), text: z.string() }).passthrough()
const content = z.union([
  z.string(),
  z.array(z.union([textPart, z.object({ type: z.string() }).passthrough()])),
])
export const chatMessage = z
  .object({
    role: z.enum(['system', 'developer', 'user', 'assistant', 'tool']),
    content: content.nullish(),
    name: z.string().optional(),
  })
  .passthrough()

const sampling = {
  max_tokens: z.number().int().min(0).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().min(0).max(1).nullish(),
  seed: z.number().int().nullish(),
  stop: z.union([z.string(), z.array(z.string()).max(16)]).nullish(),
  n: z.number().int().nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().nullish() }).passthrough().nullish(),
  presence_penalty: z.number().nullish(),
  frequency_penalty: z.number().nullish(),
  logprobs: z.union([z.boolean(), z.number()]).nullish(),
  user: z.string().nullish(),
}

export const chatSchema = z
  .object({
    model: z.string().min(1),
    messages: z.array(chatMessage).min(1),
    max_completion_tokens: z.number().int().min(0).nullish(),
    tools: z.array(z.unknown()).nullish(),
    response_format: z.object({ type: z.string() }).passthrough().nullish(),
    ...sampling,
  })
  .passthrough()

export const completionSchema = z
  .object({
    model: z.string().min(1),
    prompt: z.union([z.string(), z.array(z.string())]),
    suffix: z.string().nullish(),
    echo: z.boolean().nullish(),
    ...sampling,
  })
  .passthrough()

export const embeddingsSchema = z
  .object({
    model: z.string().min(1),
    input: z.union([z.string(), z.array(z.string())]),
    encoding_format: z.enum(['float', 'base64']).nullish(),
    dimensions: z.number().nullish(),
    user: z.string().nullish(),
  })
  .passthrough()

export function parse<S extends z.ZodType>(schema: S, body: Record<string, unknown>): z.output<S> {
  // OpenAI names the offending field in `param`.
  return parseWith(schema, body, (param, message) =>
    param
      ? new MeshError('ERR_BAD_REQUEST', `${param}: ${message}`, { param })
      : new MeshError('ERR_BAD_REQUEST', message, {}),
  )
}

type Sampling = {
  [K in keyof typeof sampling]?: z.output<(typeof sampling)[K]>
}

/** OpenAI sampling parameters as generation options; refuses what would change the answer's kind. */
export function optionsOf(r: Sampling, maxTokens: number | null | undefined): GenerationOptions | undefined {
  if (r.n != null && r.n !== 1) throw unsupported('n')
  if (r.logprobs) throw unsupported('logprobs')
  if (r.presence_penalty) throw unsupported('presence_penalty')
  if (r.frequency_penalty) throw unsupported('frequency_penalty')
  const o: GenerationOptions = {}
  if (r.temperature != null) o.temperature = r.temperature
  if (r.top_p != null) o.top_p = r.top_p
  if (r.seed != null) o.seed = r.seed
  if (maxTokens != null) o.num_predict = maxTokens
  if (r.stop != null) o.stop = typeof r.stop === 'string' ? [r.stop] : r.stop
  return Object.keys(o).length ? o : undefined
}

export function messageText(m: z.output<typeof chatMessage>, i: number): string {
  if (m.content == null) return ''
  if (typeof m.content === 'string') return m.content
  return m.content
    .map((part, j) => {
      if (part.type !== 'text') throw unsupported(`messages[${i}].content[${j}].type '${part.type}'`)
      return (part as { text: string }).text
    })
    .join('')
}
