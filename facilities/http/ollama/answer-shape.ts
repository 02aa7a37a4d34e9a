/**
 * What an Ollama request asks of the answer beyond text — `format`, `think`, `logprobs` /
 * `top_logprobs`, `tools` — and the tool calls, tool results and reasoning of the turns it
 * replays, as the wire's.
 */
import { MeshError } from '../../../kernel/errors.js'
import { isRecord, newHexToolCallId } from '../../../kernel/util.js'
import type { AnswerShape, ChatMessage, OutputFormat, ToolDefinition } from '../../../kernel/wire.js'
import type { ParsedChat, ParsedGenerate } from './requests.js'

type ParsedMessage = NonNullable<ParsedChat['messages']>[number]
type ParsedTool = NonNullable<ParsedChat['tools']>[number]

/**
 * Ollama's `format`: "json" (any JSON) or a JSON Schema object; absent, null or "" asks for nothing.
 * @throws ERR_BAD_REQUEST for anything else
 */
export function formatOf(format: unknown): OutputFormat | undefined {
  if (format === undefined || format === null || format === '') return undefined
  if (format === 'json') return { type: 'json' }
  if (isRecord(format)) return { type: 'json', schema: format }
  throw MeshError.badRequest(
    `invalid format: expected "json" or a JSON schema object, got ${JSON.stringify(format)}`,
  )
}

/** `format`, `think` and `logprobs` (with `top_logprobs` alternatives), those asked for only. @throws ERR_BAD_REQUEST */
export function shapeOf(req: ParsedChat | ParsedGenerate): AnswerShape {
  const shape: AnswerShape = {}
  const format = formatOf(req.format)
  if (format) shape.format = format
  if (req.think != null) shape.think = req.think
  // As in Ollama, `top_logprobs` counts only with `logprobs`.
  if (req.logprobs) shape.logprobs = req.top_logprobs ?? 0
  return shape
}

export function toolsOf(tools: ParsedTool[]): ToolDefinition[] {
  return tools.map((t) => {
    const fn: ToolDefinition['function'] = { name: t.function.name }
    if (t.function.description != null) fn.description = t.function.description
    if (t.function.parameters != null) fn.parameters = t.function.parameters
    return { type: 'function', function: fn }
  })
}

/** One replayed turn; a call without an id (Ollama before 0.12) gets one, as the wire needs. */
export function messageOf(m: ParsedMessage): ChatMessage {
  const out: ChatMessage = { role: m.role, content: m.content ?? '' }
  if (m.thinking) out.thinking = m.thinking
  if (m.tool_calls?.length) {
    out.toolCalls = m.tool_calls.map((c) => ({
      id: c.id || newHexToolCallId(),
      name: c.function.name,
      arguments: c.function.arguments ?? {},
    }))
  }
  if (m.tool_name) out.toolName = m.tool_name
  if (m.tool_call_id) out.toolCallId = m.tool_call_id
  return out
}
