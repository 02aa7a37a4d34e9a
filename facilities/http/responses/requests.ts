/**
 * OpenAI's Responses request body: its schema, and what of it becomes a wire ChatRequest
 * (sampling, tools, tool choice, reasoning, output format). The input items are translated
 * in input.ts. The gateway is stateless: whatever needs a stored response or conversation
 * is refused.
 */
import { z } from 'zod'
import { MeshError } from '../../../kernel/errors.js'
import { TOOL_NAME } from '../../../kernel/inference.js'
import type {
  GenerationOptions,
  OutputFormat,
  ThinkSetting,
  ToolChoice,
  ToolDefinition,
} from '../../../kernel/wire.js'

const record = z.record(z.string(), z.unknown())
/** Any input item: each type is checked where it is translated, so its errors name it. */
export const item = z.object({ type: z.string().optional() }).passthrough()

const tool = z
  .object({
    type: z.string(),
    name: z.string().optional(),
    description: z.string().nullish(),
    parameters: record.nullish(),
    strict: z.boolean().nullish(),
  })
  .passthrough()

const format = z
  .object({
    type: z.string(),
    name: z.string().optional(),
    schema: record.optional(),
    strict: z.boolean().nullish(),
  })
  .passthrough()

export const responsesSchema = z
  .object({
    model: z.string().min(1),
    input: z.union([z.string(), z.array(item)]),
    instructions: z.string().nullish(),
    tools: z.array(tool).nullish(),
    tool_choice: z
      .union([z.enum(['auto', 'none', 'required']), z.object({ type: z.string() }).passthrough()])
      .nullish(),
    parallel_tool_calls: z.boolean().nullish(),
    text: z.object({ format: format.nullish(), verbosity: z.string().nullish() }).passthrough().nullish(),
    reasoning: z.object({ effort: z.string().nullish() }).passthrough().nullish(),
    max_output_tokens: z.number().int().min(1).nullish(),
    temperature: z.number().min(0).max(2).nullish(),
    top_p: z.number().min(0).max(1).nullish(),
    stream: z.boolean().nullish(),
    store: z.boolean().nullish(),
    metadata: z.record(z.string(), z.string()).nullish(),
    // What needs state or a feature the mesh has not: refused when set (`refuseStateful`).
    previous_response_id: z.string().nullish(),
    conversation: z.unknown().optional(),
    background: z.boolean().nullish(),
    prompt: z.unknown().optional(),
    include: z.array(z.string()).nullish(),
    top_logprobs: z.number().int().nullish(),
    max_tool_calls: z.number().int().nullish(),
    truncation: z.string().nullish(),
  })
  .passthrough()

export type ResponsesRequest = z.output<typeof responsesSchema>
export type Item = z.output<typeof item>

/**
 * What would need a stored response, a stored prompt or a feature the mesh has not.
 * `store` is accepted (OpenAI's SDKs send it, default true) but nothing is stored: the
 * answer says `store: false`.
 * @throws ERR_UNSUPPORTED naming the parameter
 */
export function refuseStateful(r: ResponsesRequest): void {
  const stateless = 'needs a stored response: the gateway stores none (send the whole conversation as input)'
  if (r.previous_response_id != null) throw MeshError.unsupported('previous_response_id', stateless)
  if (r.conversation != null) throw MeshError.unsupported('conversation', stateless)
  if (r.background)
    throw MeshError.unsupported('background', 'is not supported: answers are given while the client waits')
  if (r.prompt != null)
    throw MeshError.unsupported('prompt', 'needs a stored prompt: the gateway stores none')
  if (r.include?.length) throw MeshError.unsupported('include', 'is not supported by this server')
  if (r.top_logprobs) throw MeshError.unsupported('top_logprobs', 'is not supported on /v1/responses')
  if (r.max_tool_calls != null)
    throw MeshError.unsupported('max_tool_calls', 'is not supported by this server')
  if (r.truncation != null && r.truncation !== 'disabled') {
    throw MeshError.unsupported('truncation', `'${r.truncation}' is not supported: the context is never cut`)
  }
  const verbosity = r.text?.verbosity
  if (verbosity != null && verbosity !== 'medium') {
    throw MeshError.unsupported('text.verbosity', `'${verbosity}' is not supported by this server`)
  }
}

/** `max_output_tokens` and the sampling parameters, in Ollama's names. */
export function optionsOf(r: ResponsesRequest): GenerationOptions | undefined {
  const o: GenerationOptions = {}
  if (r.max_output_tokens != null) o.num_predict = r.max_output_tokens
  if (r.temperature != null) o.temperature = r.temperature
  if (r.top_p != null) o.top_p = r.top_p
  return Object.keys(o).length ? o : undefined
}

/**
 * Function tools as wire tools; OpenAI's built-in tools (web_search, file_search,
 * code_interpreter, computer use, MCP…) run on OpenAI's side: refused.
 * @throws ERR_UNSUPPORTED naming `tools[i].type`; ERR_BAD_REQUEST for a bad name
 */
export function toolsOf(r: ResponsesRequest): ToolDefinition[] | undefined {
  if (!r.tools?.length) return undefined
  return r.tools.map((t, i) => {
    if (t.type !== 'function') {
      throw MeshError.unsupported(`tools[${i}].type`, `'${t.type}' is a built-in tool the mesh has not`)
    }
    if (t.name === undefined || !TOOL_NAME.test(t.name)) {
      throw MeshError.badRequest(`tools[${i}].name: 1 to 64 letters, digits, _ or -`, {
        param: `tools[${i}].name`,
      })
    }
    const fn: ToolDefinition['function'] = { name: t.name }
    if (t.description != null) fn.description = t.description
    if (t.parameters != null) fn.parameters = t.parameters
    if (t.strict != null) fn.strict = t.strict
    return { type: 'function', function: fn }
  })
}

/** `tool_choice` as the wire's. @throws ERR_UNSUPPORTED for allowed_tools and built-in tool choices */
export function toolChoiceOf(r: ResponsesRequest): ToolChoice | undefined {
  const c = r.tool_choice
  if (c == null || typeof c === 'string') return c ?? undefined
  if (c.type !== 'function')
    throw MeshError.unsupported('tool_choice', `of type '${c.type}' is not supported`)
  if (typeof c.name !== 'string') {
    throw MeshError.badRequest('tool_choice.name: required with type function', { param: 'tool_choice.name' })
  }
  return { name: c.name }
}

/** `text.format` as the wire's format: text (none), json_object (any JSON), json_schema. */
export function formatOf(r: ResponsesRequest): OutputFormat | undefined {
  const f = r.text?.format
  if (f == null || f.type === 'text') return undefined
  if (f.type === 'json_object') return { type: 'json' }
  if (f.type !== 'json_schema')
    throw MeshError.unsupported('text.format.type', `'${f.type}' is not supported`)
  if (!f.schema) throw MeshError.badRequest('text.format.schema: required', { param: 'text.format.schema' })
  return { type: 'json', schema: f.schema }
}

/**
 * `reasoning.effort` as the wire's `think`: low, medium, high as that effort; none off.
 * @throws ERR_UNSUPPORTED for minimal and xhigh (the backends know three levels)
 */
export function thinkOf(r: ResponsesRequest): ThinkSetting | undefined {
  const effort = r.reasoning?.effort
  if (effort == null) return undefined
  if (effort === 'none') return false
  if (effort === 'low' || effort === 'medium' || effort === 'high') return effort
  throw MeshError.unsupported('reasoning.effort', `'${effort}' is not supported: none, low, medium or high`)
}
