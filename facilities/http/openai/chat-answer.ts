/**
 * A chat answer in OpenAI's objects: the whole `chat.completion`, or its `chat.completion.chunk`s.
 * Reasoning is `reasoning_content` on the message and on stream deltas (DeepSeek's, vLLM's and
 * LiteLLM's convention; OpenAI's own API does not show it); tool calls carry their arguments as
 * a JSON string, each streamed whole in one delta.
 */
import type { ServerResponse } from 'node:http'
import type {
  ChoiceResult,
  GenerateCallbacks,
  GenerationDelta,
  GenerationResult,
  TokenLogprob,
  TokenLogprobBase,
  ToolCall,
} from '../../../kernel/wire.js'
import { dataEvent } from '../sse.js'
import { type GenerationPlan, writeFrame } from '../stream-writer.js'
import { type AnswerBase, choicesOf, endStream, usageOf } from './sse.js'

/** A call as OpenAI shows one. */
const callObject = (c: ToolCall) => ({
  id: c.id,
  type: 'function' as const,
  function: { name: c.name, arguments: JSON.stringify(c.arguments) },
})

/** A token's log probability; its bytes are the backend's, or the token's own UTF-8 when it gave none. */
const logprobEntry = (l: TokenLogprobBase) => ({
  token: l.token,
  logprob: l.logprob,
  bytes: l.bytes ?? [...Buffer.from(l.token)],
})

/** Log probabilities as a chat choice's `logprobs`. */
export function chatLogprobs(lps: TokenLogprob[]) {
  return {
    content: lps.map((l) => ({ ...logprobEntry(l), top_logprobs: (l.top ?? []).map(logprobEntry) })),
    refusal: null,
  }
}

/** `tool_calls` when the model called tools (whatever else stopped it), else `length` or `stop`. */
const finishReason = (c: ChoiceResult) =>
  c.toolCalls?.length ? 'tool_calls' : c.doneReason === 'length' ? 'length' : 'stop'

/** A choice of the whole answer; its content is null when it is only calls. */
function wholeChoice(c: ChoiceResult) {
  const calls = c.toolCalls?.length ? c.toolCalls : undefined
  return {
    index: c.index,
    message: {
      role: 'assistant',
      content: calls && c.text === '' ? null : c.text,
      refusal: null,
      ...(c.thinking ? { reasoning_content: c.thinking } : {}),
      ...(calls ? { tool_calls: calls.map(callObject) } : {}),
    },
    logprobs: c.logprobs ? chatLogprobs(c.logprobs) : null,
    finish_reason: finishReason(c),
  }
}

/** What a streamed choice has sent so far. */
interface ChoiceState {
  /** The ids of the calls it has streamed, in order (a call's `index` in its message is its place here). */
  calls: Set<string>
}

/** `calls` the choice has not streamed yet, as OpenAI's delta shows them, now counted as sent. */
function unsent(state: ChoiceState, calls: ToolCall[] | undefined) {
  const fresh: (ReturnType<typeof callObject> & { index: number })[] = []
  for (const c of calls ?? []) {
    if (state.calls.has(c.id)) continue
    fresh.push({ index: state.calls.size, ...callObject(c) })
    state.calls.add(c.id)
  }
  return fresh
}

/**
 * The chunks of one streamed answer. A choice's first chunk names the role; calls the source
 * gave in its result only go out in a delta before the choice's finish chunk; a choice that
 * sent nothing gets one with empty content before its finish chunk, so every choice has both.
 */
class ChatChunks {
  private readonly choices = new Map<number, ChoiceState>()

  constructor(private readonly base: AnswerBase) {}

  chunk(
    index: number,
    delta: Record<string, unknown>,
    logprobs: unknown = null,
    finish: string | null = null,
  ) {
    return dataEvent({
      ...this.base,
      object: 'chat.completion.chunk',
      choices: [{ index, delta, logprobs, finish_reason: finish }],
    })
  }

  /** One piece of text: a single delta object per token, naming the role in the choice's first. */
  piece(text: string, index = 0): string {
    if (this.choices.has(index)) return this.chunk(index, { content: text })
    this.choices.set(index, { calls: new Set() })
    return this.chunk(index, { role: 'assistant', content: text })
  }

  /** A delta's reasoning, calls and log probabilities as one chunk ('' when it carries none of them). */
  delta(d: GenerationDelta): string {
    const index = d.index ?? 0
    if (!d.thinking && !d.toolCalls?.length && !d.logprobs?.length) return ''
    const known = this.choices.get(index)
    const state = known ?? { calls: new Set<string>() }
    const calls = unsent(state, d.toolCalls)
    if (!d.thinking && calls.length === 0 && !d.logprobs?.length) return ''
    if (!known) this.choices.set(index, state)
    const delta: Record<string, unknown> = known ? {} : { role: 'assistant' }
    if (d.thinking) delta.reasoning_content = d.thinking
    if (calls.length) delta.tool_calls = calls
    return this.chunk(index, delta, d.logprobs?.length ? chatLogprobs(d.logprobs) : null)
  }

  /** Every choice's finish chunk, in index order, after a delta with the calls no delta carried. */
  finish(res: ServerResponse, result: GenerationResult): void {
    for (const c of choicesOf(result)) {
      const calls = c.toolCalls ? this.delta({ index: c.index, toolCalls: c.toolCalls }) : ''
      if (calls !== '') writeFrame(res, calls)
      else if (!this.choices.has(c.index)) writeFrame(res, this.piece('', c.index))
      writeFrame(res, this.chunk(c.index, {}, null, finishReason(c)))
    }
  }
}

/** How a chat completion answers: whole, or streamed with usage last when `includeUsage`. */
export function chatPlan(
  base: AnswerBase,
  stream: boolean,
  includeUsage: boolean,
  run: (cb: GenerateCallbacks) => Promise<GenerationResult>,
): GenerationPlan {
  const chunks = new ChatChunks(base)
  return {
    stream,
    run,
    piece: (text, _first, index) => chunks.piece(text, index),
    delta: (d) => chunks.delta(d),
    finish: (res, result) => {
      chunks.finish(res, result)
      endStream(
        res,
        includeUsage && { ...base, object: 'chat.completion.chunk', choices: [], usage: usageOf(result) },
      )
    },
    whole: (result) => ({
      ...base,
      object: 'chat.completion',
      choices: choicesOf(result).map(wholeChoice),
      usage: usageOf(result),
    }),
  }
}
