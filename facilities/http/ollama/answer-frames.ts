/**
 * An answer's parts beyond text as Ollama writes them: `tool_calls` ({id, function: {index,
 * name, arguments}}), `thinking` and `logprobs` ({token, logprob, bytes, top_logprobs}), in a
 * whole answer and in the frames of a stream — a tool call in a frame of its own, reasoning
 * in frames with empty content, as Ollama streams them.
 */
import type { GenerationDelta, GenerationResult, TokenLogprobBase, ToolCall } from '../../../kernel/wire.js'

type Json = Record<string, unknown>

function tokenJson(l: TokenLogprobBase): Json {
  return l.bytes
    ? { token: l.token, logprob: l.logprob, bytes: l.bytes }
    : { token: l.token, logprob: l.logprob }
}

export function logprobsJson(logprobs: NonNullable<GenerationResult['logprobs']>): Json[] {
  return logprobs.map((l) => (l.top ? { ...tokenJson(l), top_logprobs: l.top.map(tokenJson) } : tokenJson(l)))
}

/** Calls as Ollama's `tool_calls`, numbered in the turn from `first`. */
export function toolCallsJson(calls: ToolCall[], first = 0): Json[] {
  return calls.map((c, i) => ({
    id: c.id,
    function: { index: first + i, name: c.name, arguments: c.arguments },
  }))
}

/** The `message` of a chat answer or frame: `thinking` and `tool_calls` when there are any. */
export function chatMessage(content: string, thinking?: string, calls?: Json[]): Json {
  const message: Json = { role: 'assistant', content }
  if (thinking) message.thinking = thinking
  if (calls?.length) message.tool_calls = calls
  return message
}

/** `logprobs` of a reply or frame, when there are any. */
export function logprobsField(logprobs: GenerationResult['logprobs']): Json {
  return logprobs?.length ? { logprobs: logprobsJson(logprobs) } : {}
}

/**
 * The tool calls of one streamed turn: each goes out once, in a delta's frame or, when the
 * source gave it in its result only, in the final frame; numbered in the order they went.
 */
export class StreamedCalls {
  private readonly sent = new Set<string>()

  /** `calls` not sent yet, as Ollama's `tool_calls`, now counted as sent. */
  take(calls: ToolCall[] | undefined): Json[] {
    const fresh = (calls ?? []).filter((c) => !this.sent.has(c.id))
    const json = toolCallsJson(fresh, this.sent.size)
    for (const c of fresh) this.sent.add(c.id)
    return json
  }
}

/** A delta's frame body for chat (`message` and `logprobs`), or null when it carries nothing Ollama shows. */
export function chatDelta(d: GenerationDelta, calls: StreamedCalls): Json | null {
  const toolCalls = calls.take(d.toolCalls)
  if (!d.thinking && toolCalls.length === 0 && !d.logprobs?.length) return null
  return { message: chatMessage('', d.thinking, toolCalls), ...logprobsField(d.logprobs) }
}

/** A delta's frame body for generate (`response`, `thinking`, `logprobs`), or null as `chatDelta`. */
export function generateDelta(d: GenerationDelta): Json | null {
  if (!d.thinking && !d.logprobs?.length) return null
  return { response: '', ...(d.thinking ? { thinking: d.thinking } : {}), ...logprobsField(d.logprobs) }
}
