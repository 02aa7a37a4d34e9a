/**
 * Wire messages as node-llama-cpp's chat history. node-llama-cpp keeps a function call and
 * its result together, in the model's turn that made the call, so an assistant message's
 * `toolCalls` and the `tool` messages that answer them become one model turn: text, then
 * each call with its result. A history that ends with tool results ends in that turn, and the
 * model goes on with it, as node-llama-cpp's own chat session does after running functions.
 *
 * A `tool` message answers the first call of the assistant message before it that has no
 * result yet and that it names (by `toolCallId`, else by `toolName`, else the next one). A
 * tool message that answers no call is read as user text. A call left without a result is
 * ERR_BAD_REQUEST (OpenAI's rule too): the model would read a call that never returned.
 *
 * An assistant message's `thinking` goes in as a thought segment; the chat template decides
 * whether past reasoning is shown to the model (most drop it).
 */
import type { ChatHistoryItem, ChatModelFunctionCall, ChatModelResponse } from 'node-llama-cpp'
import { MeshError } from '../../../kernel/errors.js'
import { isRecord } from '../../../kernel/util.js'
import type { ChatMessage, ToolCall } from '../../../kernel/wire.js'

const ROLES: ReadonlySet<string> = new Set(['system', 'user', 'assistant', 'tool'])

/** One call of an assistant message, waiting for its result. */
interface OpenCall {
  call: ToolCall
  item: ChatModelFunctionCall
  answered: boolean
}

/** @throws ERR_BAD_REQUEST unless `m` is a message of a known role with text content */
function checkMessage(m: unknown, i: number): ChatMessage {
  if (!isRecord(m)) throw MeshError.badRequest(`messages[${i}] must be an object`)
  const { role, content } = m as Partial<ChatMessage>
  if (typeof role !== 'string' || !ROLES.has(role)) {
    throw MeshError.badRequest(`messages[${i}].role must be one of ${[...ROLES].join(', ')}`)
  }
  if (typeof content !== 'string') throw MeshError.badRequest(`messages[${i}].content must be a string`)
  return m as unknown as ChatMessage
}

/** @throws ERR_BAD_REQUEST unless an assistant message's `toolCalls` is a list of {id, name, arguments} */
function callsOf(m: ChatMessage, i: number): ToolCall[] {
  const calls: unknown = m.toolCalls
  if (calls === undefined || calls === null) return []
  if (!Array.isArray(calls)) throw MeshError.badRequest(`messages[${i}].toolCalls must be a list`)
  calls.forEach((c: unknown, j) => {
    if (!isRecord(c) || typeof c.name !== 'string' || typeof c.id !== 'string' || !isRecord(c.arguments)) {
      throw MeshError.badRequest(`messages[${i}].toolCalls[${j}] must be {id, name, arguments: object}`)
    }
  })
  return calls as ToolCall[]
}

/** A tool's result as the model reads it: the JSON it holds, or the text. */
function resultOf(content: string): unknown {
  try {
    return JSON.parse(content)
  } catch {
    return content
  }
}

/** The model turn of an assistant message, and its calls waiting for results. */
function modelTurn(m: ChatMessage, i: number): { item: ChatModelResponse; open: OpenCall[] } {
  const calls = callsOf(m, i)
  if (calls.length === 0 && !m.thinking) return { item: { type: 'model', response: [m.content] }, open: [] }
  const response: ChatModelResponse['response'] = []
  if (typeof m.thinking === 'string' && m.thinking !== '') {
    response.push({ type: 'segment', segmentType: 'thought', text: m.thinking, ended: true })
  }
  if (m.content !== '' || calls.length === 0) response.push(m.content)
  const open = calls.map((call): OpenCall => {
    const item: ChatModelFunctionCall = {
      type: 'functionCall',
      name: call.name,
      params: call.arguments,
      result: '',
    }
    response.push(item)
    return { call, item, answered: false }
  })
  return { item: { type: 'model', response }, open }
}

/** The waiting call a tool message answers, or undefined. */
function answeredBy(open: OpenCall[], m: ChatMessage): OpenCall | undefined {
  const waiting = open.filter((o) => !o.answered)
  if (typeof m.toolCallId === 'string' && m.toolCallId !== '')
    return waiting.find((o) => o.call.id === m.toolCallId)
  if (typeof m.toolName === 'string' && m.toolName !== '')
    return waiting.find((o) => o.call.name === m.toolName)
  return waiting[0]
}

/** @throws ERR_BAD_REQUEST when a call of the message at `i` has no result */
function checkAnswered(open: OpenCall[], i: number): void {
  const left = open.find((o) => !o.answered)
  if (left) {
    throw MeshError.badRequest(
      `messages[${i}]: no tool message answers call '${left.call.id}' (${left.call.name})`,
      {
        param: 'messages',
      },
    )
  }
}

/** Maps wire messages to node-llama-cpp's history, ending with the model turn to generate. @throws ERR_BAD_REQUEST */
export function toChatHistory(messages: unknown): ChatHistoryItem[] {
  if (!Array.isArray(messages) || messages.length === 0) {
    throw MeshError.badRequest('messages must be a non-empty array')
  }
  const history: ChatHistoryItem[] = []
  let open: OpenCall[] = []
  let openAt = -1
  messages.forEach((raw: unknown, i) => {
    const m = checkMessage(raw, i)
    const answered = m.role === 'tool' ? answeredBy(open, m) : undefined
    if (answered) {
      answered.item.result = resultOf(m.content)
      answered.answered = true
      return
    }
    checkAnswered(open, openAt)
    open = []
    if (m.role === 'system') history.push({ type: 'system', text: m.content })
    else if (m.role === 'assistant') {
      const turn = modelTurn(m, i)
      history.push(turn.item)
      open = turn.open
      openAt = i
    }
    // A tool message that answers no call: the model reads it as input.
    else history.push({ type: 'user', text: m.content })
  })
  checkAnswered(open, openAt)
  // A trailing assistant message is a prefix to continue, as in Ollama.
  if (history[history.length - 1]?.type !== 'model') history.push({ type: 'model', response: [] })
  return history
}
