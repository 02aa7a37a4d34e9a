/**
 * Anthropic's `system` and `messages` as wire chat messages. Text blocks of one turn join
 * with a newline; an assistant turn's `thinking` and `tool_use` blocks become its reasoning
 * and tool calls; a user turn's `tool_result` blocks become `tool` messages (with the name
 * of the call they answer, looked up from the earlier `tool_use`), in their place among the
 * turn's text. Blocks the mesh's models cannot read (images, documents, redacted thinking,
 * server tool results) are refused, naming the block.
 */
import { z } from 'zod'
import { MeshError } from '../../../kernel/errors.js'
import type { ChatMessage, ToolCall } from '../../../kernel/wire.js'
import { parseAt as parse } from '../plumbing.js'
import { CallNames } from '../tool-results.js'
import type { Block, MessagesRequest } from './requests.js'

const textBlock = z.object({ type: z.literal('text'), text: z.string() }).passthrough()
const thinkingBlock = z.object({ type: z.literal('thinking'), thinking: z.string() }).passthrough()
const toolUseBlock = z
  .object({
    type: z.literal('tool_use'),
    id: z.string().min(1).max(128),
    name: z.string().min(1),
    input: z.record(z.string(), z.unknown()),
  })
  .passthrough()
const toolResultBlock = z
  .object({
    type: z.literal('tool_result'),
    tool_use_id: z.string().min(1),
    content: z.union([z.string(), z.array(z.object({ type: z.string() }).passthrough())]).optional(),
    is_error: z.boolean().optional(),
  })
  .passthrough()

/** What a tool's failure (`is_error`) reads as in the tool message: the wire has no flag for it. */
export const TOOL_ERROR_PREFIX = 'Error: '

/** A block the mesh cannot read. */
const refuse = (where: string, type: string) =>
  MeshError.unsupported(
    where,
    `(a block of type ${type}) is not supported: the mesh reads text, reasoning, tool calls and results only`,
  )

/** The text of `content` (a string, or text blocks only). @throws ERR_UNSUPPORTED naming another block */
function textOf(content: string | Block[], where: string): string {
  if (typeof content === 'string') return content
  return content
    .map((b, j) => {
      if (b.type !== 'text') throw refuse(`${where}[${j}]`, b.type)
      return parse(textBlock, b, `${where}[${j}]`).text
    })
    .join('\n')
}

/** One assistant turn: its text, reasoning and tool calls; remembers each call's name by id. */
function assistantTurn(content: string | Block[], i: number, names: CallNames): ChatMessage {
  if (typeof content === 'string') return { role: 'assistant', content }
  const text: string[] = []
  const thinking: string[] = []
  const toolCalls: ToolCall[] = []
  content.forEach((b, j) => {
    const where = `messages[${i}].content[${j}]`
    if (b.type === 'text') text.push(parse(textBlock, b, where).text)
    else if (b.type === 'thinking') thinking.push(parse(thinkingBlock, b, where).thinking)
    else if (b.type === 'tool_use') {
      const call = parse(toolUseBlock, b, where)
      names.add(call)
      toolCalls.push({ id: call.id, name: call.name, arguments: call.input })
    } else throw refuse(where, b.type)
  })
  const m: ChatMessage = { role: 'assistant', content: text.join('\n') }
  if (thinking.length) m.thinking = thinking.join('\n')
  if (toolCalls.length) m.toolCalls = toolCalls
  return m
}

/** A `tool_result` block as a `tool` message. @throws ERR_BAD_REQUEST for a call no earlier turn made */
function toolMessage(b: Block, where: string, names: CallNames): ChatMessage {
  const r = parse(toolResultBlock, b, where)
  const name = names.answered(r.tool_use_id, `${where}.tool_use_id`, 'tool_use block has id')
  const text = r.content === undefined ? '' : textOf(r.content as string | Block[], `${where}.content`)
  return {
    role: 'tool',
    content: r.is_error ? TOOL_ERROR_PREFIX + text : text,
    toolCallId: r.tool_use_id,
    toolName: name,
  }
}

/** One user turn: its text as user messages, its tool results as tool messages, in order. */
function userTurn(content: string | Block[], i: number, names: CallNames): ChatMessage[] {
  if (typeof content === 'string') return [{ role: 'user', content }]
  const out: ChatMessage[] = []
  let text: string[] = []
  const flush = () => {
    if (text.length) out.push({ role: 'user', content: text.join('\n') })
    text = []
  }
  content.forEach((b, j) => {
    const where = `messages[${i}].content[${j}]`
    if (b.type === 'text') text.push(parse(textBlock, b, where).text)
    else if (b.type === 'tool_result') {
      flush()
      out.push(toolMessage(b, where, names))
    } else throw refuse(where, b.type)
  })
  flush()
  return out
}

/**
 * The request's system prompt and turns as wire messages, the system prompt first.
 * @throws ERR_UNSUPPORTED naming a block the mesh cannot read; ERR_BAD_REQUEST for a malformed one
 */
export function chatMessagesOf(r: MessagesRequest): ChatMessage[] {
  const out: ChatMessage[] = []
  if (r.system !== undefined) {
    const system = textOf(r.system, 'system')
    if (system !== '') out.push({ role: 'system', content: system })
  }
  const names = new CallNames()
  r.messages.forEach((m, i) => {
    if (m.role === 'assistant') out.push(assistantTurn(m.content, i, names))
    else out.push(...userTurn(m.content, i, names))
  })
  return out
}
