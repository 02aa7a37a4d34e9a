/** OpenAI's request bodies: schemas, parsed so a bad field is a 400 naming it as OpenAI does (`tools[0].type`). */
import { z } from 'zod'
import { MeshError } from '../../../kernel/errors.js'
import { MAX_CHOICES, MAX_LOGPROBS, MAX_TOOLS, TOOL_NAME } from '../../../kernel/inference.js'
import { parseWith } from '../plumbing.js'
import { unsupported } from './errors.js'

const textPart = z.object({ type: z.literal('text'), text: z.string() }).passthrough()
const content = z.union([
  z.string(),
  z.array(z.union([textPart, z.object({ type: z.string() }).passthrough()])),
])
const jsonSchema = z.record(z.string(), z.unknown())
const functionName = z.string().regex(TOOL_NAME, 'a function name: 1 to 64 letters, digits, _ or -')

/** A call replayed in an assistant message: OpenAI's form, arguments as a JSON string. */
const toolCall = z
  .object({
    id: z.string().min(1).max(128).nullish(),
    type: z.string(),
    function: z.object({ name: functionName, arguments: z.string() }).passthrough().optional(),
  })
  .passthrough()

export const chatMessage = z
  .object({
    role: z.enum(['system', 'developer', 'user', 'assistant', 'tool']),
    content: content.nullish(),
    name: z.string().optional(),
    tool_calls: z.array(toolCall).max(MAX_TOOLS).nullish(),
    tool_call_id: z.string().max(128).nullish(),
    /** An assistant turn's reasoning (DeepSeek's, vLLM's and LiteLLM's name for it). */
    reasoning_content: z.string().nullish(),
  })
  .passthrough()

const tool = z
  .object({
    type: z.string(),
    function: z
      .object({
        name: functionName,
        description: z.string().max(8192).nullish(),
        parameters: jsonSchema.nullish(),
        strict: z.boolean().nullish(),
      })
      .passthrough()
      .optional(),
  })
  .passthrough()

const toolChoice = z.union([
  z.enum(['auto', 'none', 'required']),
  z
    .object({ type: z.string(), function: z.object({ name: functionName }).passthrough().optional() })
    .passthrough(),
])

const responseFormat = z
  .object({
    type: z.enum(['text', 'json_object', 'json_schema']),
    json_schema: z
      .object({
        name: z.string().max(64),
        description: z.string().nullish(),
        schema: jsonSchema.nullish(),
        strict: z.boolean().nullish(),
      })
      .passthrough()
      .nullish(),
  })
  .passthrough()

const penalty = z.number().min(-2).max(2).nullish()

/** Sampling parameters both completion endpoints take, with the engines' own extensions (llama.cpp's and vLLM's names). */
const sampling = {
  max_tokens: z.number().int().min(0).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().min(0).max(1).nullish(),
  seed: z.number().int().nullish(),
  stop: z.union([z.string(), z.array(z.string()).max(16)]).nullish(),
  n: z.number().int().min(1).max(MAX_CHOICES).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().nullish() }).passthrough().nullish(),
  presence_penalty: penalty,
  frequency_penalty: penalty,
  logit_bias: z.record(z.string(), z.number()).nullish(),
  user: z.string().nullish(),
  top_k: z.number().int().min(0).nullish(),
  min_p: z.number().min(0).max(1).nullish(),
  repeat_penalty: z.number().min(0).nullish(),
  /** vLLM's name for `repeat_penalty`. */
  repetition_penalty: z.number().min(0).nullish(),
}

export type Sampling = {
  [K in keyof typeof sampling]?: z.output<(typeof sampling)[K]>
}

export const chatSchema = z
  .object({
    model: z.string().min(1),
    messages: z.array(chatMessage).min(1),
    max_completion_tokens: z.number().int().min(0).nullish(),
    tools: z.array(tool).max(MAX_TOOLS).nullish(),
    tool_choice: toolChoice.nullish(),
    parallel_tool_calls: z.boolean().nullish(),
    response_format: responseFormat.nullish(),
    reasoning_effort: z.enum(['none', 'minimal', 'low', 'medium', 'high']).nullish(),
    logprobs: z.boolean().nullish(),
    top_logprobs: z.number().int().min(0).max(MAX_LOGPROBS).nullish(),
    ...sampling,
  })
  .passthrough()

export const completionSchema = z
  .object({
    model: z.string().min(1),
    prompt: z.union([z.string(), z.array(z.string())]),
    suffix: z.string().nullish(),
    echo: z.boolean().nullish(),
    best_of: z.number().int().min(1).nullish(),
    /** Log probabilities of the tokens, with this many alternatives each. */
    logprobs: z.number().int().min(0).max(MAX_LOGPROBS).nullish(),
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

/** A field's path as OpenAI names it: `tools[0].function.name`. */
const paramOf = (path: string) => path.replace(/\.(\d+)(?=\.|$)/g, '[$1]')

/** @throws ERR_BAD_REQUEST naming the first bad field in `param` */
export function parse<S extends z.ZodType>(schema: S, body: Record<string, unknown>): z.output<S> {
  return parseWith(schema, body, (path, message) => {
    const param = paramOf(path)
    return param
      ? new MeshError('ERR_BAD_REQUEST', `${param}: ${message}`, { param })
      : new MeshError('ERR_BAD_REQUEST', message, {})
  })
}

/** A message's text: its string, or its text parts joined. @throws ERR_UNSUPPORTED for any other part */
export function messageText(m: z.output<typeof chatMessage>, i: number): string {
  if (m.content == null) return ''
  if (typeof m.content === 'string') return m.content
  return m.content
    .map((part, j) => {
      if (part.type !== 'text') {
        throw unsupported(
          `messages[${i}].content[${j}].type`,
          `'${part.type}' is not supported by this server`,
        )
      }
      return (part as { text: string }).text
    })
    .join('')
}
