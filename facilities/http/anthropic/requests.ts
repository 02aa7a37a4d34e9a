/**
 * Anthropic's Messages request body: its schema, and what of it becomes a wire ChatRequest
 * (sampling, tools, tool choice, reasoning, output format). The conversation itself is
 * translated in conversation.ts.
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
/** Any content block: each type is checked where it is translated, so its errors name it. */
export const block = z.object({ type: z.string() }).passthrough()
const content = z.union([z.string(), z.array(block)])

const tool = z
  .object({
    type: z.string().optional(),
    name: z.string(),
    description: z.string().optional(),
    input_schema: record.optional(),
    strict: z.boolean().optional(),
  })
  .passthrough()

export const messagesSchema = z
  .object({
    model: z.string().min(1),
    max_tokens: z.number().int().min(1),
    messages: z.array(z.object({ role: z.enum(['user', 'assistant']), content }).passthrough()).min(1),
    system: content.optional(),
    tools: z.array(tool).optional(),
    tool_choice: z
      .object({
        type: z.enum(['auto', 'any', 'tool', 'none']),
        name: z.string().optional(),
        disable_parallel_tool_use: z.boolean().optional(),
      })
      .passthrough()
      .optional(),
    thinking: z
      .object({
        type: z.string(),
        budget_tokens: z.number().int().optional(),
        display: z.string().nullish(),
      })
      .passthrough()
      .optional(),
    output_config: z
      .object({
        effort: z.string().nullish(),
        format: z.object({ type: z.string(), schema: record.optional() }).passthrough().nullish(),
      })
      .passthrough()
      .optional(),
    stop_sequences: z.array(z.string()).max(16).optional(),
    temperature: z.number().min(0).max(1).optional(),
    top_p: z.number().min(0).max(1).optional(),
    top_k: z.number().int().min(0).optional(),
    stream: z.boolean().optional(),
    // Features the mesh has no counterpart for: refused when set (`refuseServerFeatures`).
    container: z.unknown().optional(),
    mcp_servers: z.unknown().optional(),
    context_management: z.unknown().optional(),
  })
  .passthrough()

export type MessagesRequest = z.output<typeof messagesSchema>
export type Block = z.output<typeof block>

/** Anthropic's server-side features (code execution, MCP connectors, context editing). @throws ERR_UNSUPPORTED */
export function refuseServerFeatures(r: MessagesRequest): void {
  for (const param of ['container', 'mcp_servers', 'context_management'] as const) {
    if (r[param] != null)
      throw MeshError.unsupported(param, 'is an Anthropic server feature the mesh has not')
  }
}

/** `max_tokens`, `stop_sequences` and the sampling parameters, in Ollama's names. */
export function optionsOf(r: MessagesRequest): GenerationOptions {
  const o: GenerationOptions = { num_predict: r.max_tokens }
  if (r.temperature !== undefined) o.temperature = r.temperature
  if (r.top_p !== undefined) o.top_p = r.top_p
  if (r.top_k !== undefined) o.top_k = r.top_k
  if (r.stop_sequences?.length) o.stop = r.stop_sequences
  return o
}

/**
 * The caller's tools as wire tools. Anthropic's server tools (`web_search_…`, `bash_…`,
 * `text_editor_…`: any `type` but `custom`) run on Anthropic's side: refused.
 * @throws ERR_UNSUPPORTED naming `tools[i].type`; ERR_BAD_REQUEST for a bad name or no schema
 */
export function toolsOf(r: MessagesRequest): ToolDefinition[] | undefined {
  if (!r.tools?.length) return undefined
  return r.tools.map((t, i) => {
    if (t.type !== undefined && t.type !== 'custom') {
      throw MeshError.unsupported(
        `tools[${i}].type`,
        `'${t.type}' is an Anthropic server tool the mesh has not`,
      )
    }
    if (!TOOL_NAME.test(t.name)) {
      throw MeshError.badRequest(`tools[${i}].name: 1 to 64 letters, digits, _ or -`, {
        param: `tools[${i}].name`,
      })
    }
    if (!t.input_schema) {
      throw MeshError.badRequest(`tools[${i}].input_schema: required`, { param: `tools[${i}].input_schema` })
    }
    const fn: ToolDefinition['function'] = { name: t.name, parameters: t.input_schema }
    if (t.description !== undefined) fn.description = t.description
    if (t.strict !== undefined) fn.strict = t.strict
    return { type: 'function', function: fn }
  })
}

/** `tool_choice` as the wire's: auto, any → required, tool → that one, none. @throws ERR_BAD_REQUEST */
export function toolChoiceOf(r: MessagesRequest): { toolChoice?: ToolChoice; parallelToolCalls?: boolean } {
  const c = r.tool_choice
  if (!c) return {}
  const out: { toolChoice?: ToolChoice; parallelToolCalls?: boolean } = {}
  if (c.type === 'tool') {
    if (!c.name)
      throw MeshError.badRequest('tool_choice.name: required with type tool', { param: 'tool_choice.name' })
    out.toolChoice = { name: c.name }
  } else out.toolChoice = c.type === 'any' ? 'required' : c.type
  if (c.disable_parallel_tool_use !== undefined) out.parallelToolCalls = !c.disable_parallel_tool_use
  return out
}

const EFFORTS = new Set(['low', 'medium', 'high'])

/**
 * `thinking` (and `output_config.effort`) as the wire's `think`: enabled and adaptive turn
 * reasoning on (the backends have no token budget for it: `max_tokens` bounds reasoning and
 * answer together, as in Anthropic's API), disabled off; an effort of low, medium or high
 * with reasoning on is that effort.
 * @throws ERR_UNSUPPORTED for `thinking.type` between_tools, an effort beyond high, or an effort without reasoning
 */
export function thinkOf(r: MessagesRequest): ThinkSetting | undefined {
  const type = r.thinking?.type
  if (type !== undefined && !['enabled', 'adaptive', 'disabled'].includes(type)) {
    throw MeshError.unsupported('thinking.type', `'${type}' is not supported by this server`)
  }
  const effort = r.output_config?.effort
  if (effort != null) {
    if (!EFFORTS.has(effort))
      throw MeshError.unsupported('output_config.effort', `'${effort}': low, medium or high only`)
    if (type !== 'enabled' && type !== 'adaptive') {
      throw MeshError.unsupported(
        'output_config.effort',
        'sets the reasoning effort here: it needs thinking enabled',
      )
    }
    return effort as ThinkSetting
  }
  return type === undefined ? undefined : type !== 'disabled'
}

/** `output_config.format` (a JSON schema) as the wire's format. @throws ERR_UNSUPPORTED for another type */
export function formatOf(r: MessagesRequest): OutputFormat | undefined {
  const f = r.output_config?.format
  if (f == null) return undefined
  if (f.type !== 'json_schema')
    throw MeshError.unsupported('output_config.format.type', `'${f.type}' is not supported`)
  return f.schema ? { type: 'json', schema: f.schema } : { type: 'json' }
}
