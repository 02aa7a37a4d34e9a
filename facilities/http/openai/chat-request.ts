/**
 * OpenAI's chat request as the wire's ChatRequest: messages with their tool calls and
 * reasoning, tools, output format, reasoning effort, log probabilities, choices, sampling.
 * What the mesh cannot give is refused naming the parameter, never dropped.
 */
import type { z } from 'zod'
import { MeshError } from '../../../kernel/errors.js'
import { newHexToolCallId } from '../../../kernel/util.js'
import type {
  ChatMessage,
  ChatRequest,
  OutputFormat,
  ThinkSetting,
  ToolCall,
  ToolChoice,
  ToolDefinition,
} from '../../../kernel/wire.js'
import { CallNames } from '../tool-results.js'
import { unsupported } from './errors.js'
import { type chatMessage, type chatSchema, messageText } from './requests.js'
import { choiceCount, optionsOf } from './sampling.js'

type Chat = z.output<typeof chatSchema>
type Message = z.output<typeof chatMessage>

const bad = (param: string, message: string) => MeshError.badRequest(`${param}: ${message}`, { param })

/** Fields that ask for what the mesh cannot give: audio, predicted outputs, web search, verbosity. */
const REFUSED = ['audio', 'prediction', 'web_search_options', 'verbosity'] as const
/** OpenAI's deprecated function calling, before tools. */
const LEGACY = ['functions', 'function_call'] as const
const USE_TOOLS = 'is not supported by this server: use tools and tool_choice'

/** @throws ERR_UNSUPPORTED naming the first field asked for that the mesh cannot give */
function refuseUnhonoured(body: Record<string, unknown>): void {
  for (const f of REFUSED) if (body[f] != null) throw unsupported(f)
  for (const f of LEGACY) if (body[f] != null) throw unsupported(f, USE_TOOLS)
  const modalities = body.modalities
  if (Array.isArray(modalities) && modalities.some((m) => m !== 'text')) throw unsupported('modalities')
}

/** A call's arguments, OpenAI's JSON string, as an object (an empty string: no arguments). @throws ERR_BAD_REQUEST */
function argumentsOf(json: string, param: string): Record<string, unknown> {
  if (json.trim() === '') return {}
  let value: unknown
  try {
    value = JSON.parse(json)
  } catch {
    throw bad(param, 'not valid JSON')
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    throw bad(param, 'not a JSON object')
  return value as Record<string, unknown>
}

/** The calls an assistant turn made, replayed. @throws ERR_UNSUPPORTED for a call other than a function's; ERR_BAD_REQUEST */
function replayedCalls(calls: NonNullable<Message['tool_calls']>, i: number): ToolCall[] {
  return calls.map((c, j) => {
    const at = `messages[${i}].tool_calls[${j}]`
    if (c.type !== 'function') {
      throw unsupported(`${at}.type`, `'${c.type}' is not supported by this server: only function calls`)
    }
    if (!c.function) throw bad(`${at}.function`, 'required')
    return {
      id: c.id ?? newHexToolCallId(),
      name: c.function.name,
      arguments: argumentsOf(c.function.arguments, `${at}.function.arguments`),
    }
  })
}

/**
 * The messages as the wire's: `developer` is `system`; an assistant turn keeps its calls
 * and reasoning (`reasoning_content`); a tool turn names the function of the call it answers.
 * @throws ERR_BAD_REQUEST for a tool turn answering no earlier call; ERR_UNSUPPORTED
 */
function messagesOf(messages: Message[]): ChatMessage[] {
  const callNames = new CallNames()
  return messages.map((m, i): ChatMessage => {
    if ((m as Record<string, unknown>).function_call != null) {
      throw unsupported(`messages[${i}].function_call`, USE_TOOLS)
    }
    const content = messageText(m, i)
    if (m.role === 'developer') return { role: 'system', content }
    if (m.role === 'tool') {
      const id = m.tool_call_id
      if (id == null) throw bad(`messages[${i}].tool_call_id`, 'required in a tool message')
      const name = callNames.answered(id, `messages[${i}].tool_call_id`, 'assistant call has id')
      return { role: 'tool', content, toolCallId: id, toolName: name }
    }
    if (m.role !== 'assistant') return { role: m.role, content }
    const turn: ChatMessage = { role: 'assistant', content }
    if (m.reasoning_content) turn.thinking = m.reasoning_content
    if (m.tool_calls?.length) {
      turn.toolCalls = replayedCalls(m.tool_calls, i)
      for (const c of turn.toolCalls) callNames.add(c)
    }
    return turn
  })
}

/** @throws ERR_UNSUPPORTED for a tool other than a function; ERR_BAD_REQUEST */
function toolsOf(tools: NonNullable<Chat['tools']>): ToolDefinition[] {
  return tools.map((t, i) => {
    if (t.type !== 'function') {
      throw unsupported(
        `tools[${i}].type`,
        `'${t.type}' is not supported by this server: only function tools`,
      )
    }
    const f = t.function
    if (!f) throw bad(`tools[${i}].function`, 'required')
    return {
      type: 'function',
      function: {
        name: f.name,
        ...(f.description != null ? { description: f.description } : {}),
        ...(f.parameters != null ? { parameters: f.parameters } : {}),
        ...(f.strict != null ? { strict: f.strict } : {}),
      },
    }
  })
}

/** @throws ERR_UNSUPPORTED for a choice other than a function's (`allowed_tools`, `custom`); ERR_BAD_REQUEST */
function toolChoiceOf(choice: NonNullable<Chat['tool_choice']>): ToolChoice {
  if (typeof choice === 'string') return choice
  if (choice.type !== 'function') {
    throw unsupported('tool_choice', `of type '${choice.type}' is not supported by this server`)
  }
  if (!choice.function) throw bad('tool_choice.function', 'required')
  return { name: choice.function.name }
}

/** `text` asks for nothing; JSON, with or without a schema, is the wire's format. @throws ERR_BAD_REQUEST */
function formatOf(f: NonNullable<Chat['response_format']>): OutputFormat | undefined {
  if (f.type === 'text') return undefined
  if (f.type === 'json_object') return { type: 'json' }
  if (!f.json_schema) throw bad('response_format.json_schema', 'required with type json_schema')
  return f.json_schema.schema ? { type: 'json', schema: f.json_schema.schema } : { type: 'json' }
}

/** `reasoning_effort` as the wire's think: `none` turns reasoning off, `minimal` is the least there is. */
const THINK: Record<NonNullable<Chat['reasoning_effort']>, ThinkSetting> = {
  none: false,
  minimal: 'low',
  low: 'low',
  medium: 'medium',
  high: 'high',
}

/** `logprobs: true` with `top_logprobs` alternatives (0 when not given). @throws ERR_BAD_REQUEST */
function logprobsOf(r: Chat): { logprobs?: number } {
  if (r.logprobs === true) return { logprobs: r.top_logprobs ?? 0 }
  if (r.top_logprobs) throw bad('top_logprobs', 'needs logprobs: true')
  return {}
}

/**
 * The wire request a chat completion asks for; only what the caller set is set.
 * `parallel_tool_calls` without tools asks for nothing and is left out.
 * @throws ERR_UNSUPPORTED naming what the mesh cannot give; ERR_BAD_REQUEST naming a bad field
 */
export function chatRequestOf(r: Chat): ChatRequest {
  refuseUnhonoured(r)
  const messages = messagesOf(r.messages)
  const options = optionsOf(r, r.max_completion_tokens ?? r.max_tokens)
  const tools = r.tools?.length ? toolsOf(r.tools) : undefined
  const format = r.response_format ? formatOf(r.response_format) : undefined
  return {
    model: r.model,
    messages,
    ...(options ? { options } : {}),
    ...(tools ? { tools } : {}),
    ...(r.tool_choice != null ? { toolChoice: toolChoiceOf(r.tool_choice) } : {}),
    ...(tools && r.parallel_tool_calls != null ? { parallelToolCalls: r.parallel_tool_calls } : {}),
    ...(format ? { format } : {}),
    ...(r.reasoning_effort != null ? { think: THINK[r.reasoning_effort] } : {}),
    ...logprobsOf(r),
    ...choiceCount(r.n),
  }
}
