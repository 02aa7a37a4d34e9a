/**
 * OpenAI's Responses `instructions` and `input` as wire chat messages. Message items keep
 * their role (system and developer are system messages) and text parts (`input_text`,
 * `output_text`); `function_call` items join the assistant turn before them as its tool
 * calls; `function_call_output` items become `tool` messages, named after the call they
 * answer; a `reasoning` item's summary is the next assistant turn's reasoning. Images, files,
 * audio, item references and built-in tool calls are refused, naming the item.
 */
import { z } from 'zod'
import { MeshError } from '../../../kernel/errors.js'
import { jsonObjectOf } from '../../../kernel/util.js'
import type { ChatMessage, ChatRole } from '../../../kernel/wire.js'
import { parseAt as parse } from '../plumbing.js'
import { CallNames } from '../tool-results.js'
import type { Item, ResponsesRequest } from './requests.js'

const part = z.object({ type: z.string() }).passthrough()
const messageItem = z
  .object({
    role: z.enum(['user', 'assistant', 'system', 'developer']),
    content: z.union([z.string(), z.array(part)]),
  })
  .passthrough()
const textPart = z.object({ text: z.string() }).passthrough()
const functionCall = z
  .object({ call_id: z.string().min(1).max(128), name: z.string().min(1), arguments: z.string() })
  .passthrough()
const functionOutput = z
  .object({ call_id: z.string().min(1), output: z.union([z.string(), z.array(part)]) })
  .passthrough()
const reasoning = z
  .object({ summary: z.array(textPart).optional(), encrypted_content: z.string().nullish() })
  .passthrough()

/** Text parts, joined; anything else (images, files, audio) refused. */
function textOf(content: string | z.output<typeof part>[], where: string): string {
  if (typeof content === 'string') return content
  return content
    .map((p, j) => {
      if (p.type !== 'input_text' && p.type !== 'output_text') {
        throw MeshError.unsupported(
          `${where}[${j}]`,
          `(${p.type}) is not supported: the mesh's models read text only`,
        )
      }
      return parse(textPart, p, `${where}[${j}]`).text
    })
    .join('\n')
}

/** The messages being built, and the names of the calls made so far (by call id). */
class Conversation {
  readonly messages: ChatMessage[] = []
  private readonly names = new CallNames()

  /** The assistant turn still open to the reasoning, text or calls that follow it. */
  private get openAssistant(): ChatMessage | undefined {
    const last = this.messages.at(-1)
    return last?.role === 'assistant' ? last : undefined
  }

  message(it: Item, where: string): void {
    const m = parse(messageItem, it, where)
    const role: ChatRole = m.role === 'developer' ? 'system' : m.role
    const content = textOf(m.content, `${where}.content`)
    const open = this.openAssistant
    // A reasoning item's turn takes the message that follows it.
    if (role === 'assistant' && open && open.content === '' && !open.toolCalls) open.content = content
    else this.messages.push({ role, content })
  }

  functionCall(it: Item, where: string): void {
    const c = parse(functionCall, it, where)
    const args = jsonObjectOf(c.arguments)
    if (!args) {
      throw MeshError.badRequest(`${where}.arguments: not a JSON object`, { param: `${where}.arguments` })
    }
    this.names.add({ id: c.call_id, name: c.name })
    const call = { id: c.call_id, name: c.name, arguments: args }
    const open = this.openAssistant
    if (open) open.toolCalls = [...(open.toolCalls ?? []), call]
    else this.messages.push({ role: 'assistant', content: '', toolCalls: [call] })
  }

  functionOutput(it: Item, where: string): void {
    const o = parse(functionOutput, it, where)
    const name = this.names.answered(o.call_id, `${where}.call_id`, 'function_call has call_id')
    const content = textOf(o.output, `${where}.output`)
    this.messages.push({ role: 'tool', content, toolCallId: o.call_id, toolName: name })
  }

  reasoning(it: Item, where: string): void {
    const r = parse(reasoning, it, where)
    if (r.encrypted_content) {
      throw MeshError.unsupported(`${where}.encrypted_content`, "is OpenAI's: the mesh cannot read it")
    }
    const text = (r.summary ?? []).map((s) => s.text).join('\n')
    if (text !== '') this.messages.push({ role: 'assistant', content: '', thinking: text })
  }
}

/**
 * The request's instructions and input as wire messages, the instructions first.
 * @throws ERR_UNSUPPORTED naming an item or part the mesh cannot read; ERR_BAD_REQUEST for a malformed one, or none
 */
export function chatMessagesOf(r: ResponsesRequest): ChatMessage[] {
  const c = new Conversation()
  if (r.instructions) c.messages.push({ role: 'system', content: r.instructions })
  if (typeof r.input === 'string') {
    c.messages.push({ role: 'user', content: r.input })
    return c.messages
  }
  r.input.forEach((it, i) => {
    const where = `input[${i}]`
    const type = it.type ?? 'message'
    if (type === 'message') c.message(it, where)
    else if (type === 'function_call') c.functionCall(it, where)
    else if (type === 'function_call_output') c.functionOutput(it, where)
    else if (type === 'reasoning') c.reasoning(it, where)
    else throw MeshError.unsupported(`${where}.type`, `'${type}' is not supported by this server`)
  })
  if (c.messages.length === 0) throw MeshError.badRequest('input: nothing to answer', { param: 'input' })
  return c.messages
}
