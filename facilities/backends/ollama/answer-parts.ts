/**
 * What an Ollama answer carries besides its text — reasoning (`thinking`), tool calls and log
 * probabilities — as ours, collected chunk by chunk: passed on as deltas when the caller listens
 * for them, kept for the result otherwise.
 */
import type { ChatResponse, GenerateResponse } from 'ollama'
import { MeshError } from '../../../kernel/errors.js'
import { isRecord, jsonObjectOf, newHexToolCallId } from '../../../kernel/util.js'
import type {
  GenerateCallbacks,
  GenerationDelta,
  GenerationResult,
  TokenLogprob,
  TokenLogprobBase,
  ToolCall,
} from '../../../kernel/wire.js'

type Part = ChatResponse | GenerateResponse

/** A call as Ollama sends it: `id` since Ollama 0.12 (the `ollama` package's type lacks it). */
interface OllamaToolCall {
  id?: unknown
  function?: { name?: unknown; arguments?: unknown }
}

/** Arguments are an object in Ollama; an OpenAI-style JSON string is read too. */
function argumentsOf(args: unknown, name: string): Record<string, unknown> {
  if (args === undefined || args === null) return {}
  if (isRecord(args)) return args
  const parsed = typeof args === 'string' ? jsonObjectOf(args) : undefined
  if (parsed) return parsed
  throw MeshError.backendUnavailable(`Ollama answered a call of '${name}' whose arguments are not an object`)
}

/** Ollama's tool calls as ours, with an id made for a call that has none. @throws ERR_BACKEND_UNAVAILABLE */
export function toolCallsOf(calls: unknown): ToolCall[] {
  if (!Array.isArray(calls)) return []
  return calls.map((c: OllamaToolCall) => {
    const name = c?.function?.name
    if (typeof name !== 'string' || name === '')
      throw MeshError.backendUnavailable('Ollama answered a tool call without a function name')
    const id = typeof c.id === 'string' && c.id !== '' ? c.id : newHexToolCallId()
    return { id, name, arguments: argumentsOf(c.function?.arguments, name) }
  })
}

interface OllamaTokenLogprob {
  token: string
  logprob: number
  bytes?: number[]
}

function tokenLogprobOf(l: OllamaTokenLogprob): TokenLogprobBase {
  return Array.isArray(l.bytes)
    ? { token: l.token, logprob: l.logprob, bytes: l.bytes }
    : { token: l.token, logprob: l.logprob }
}

/** Ollama's `logprobs` (`top_logprobs` the alternatives) as ours. */
export function logprobsOf(logprobs: unknown): TokenLogprob[] {
  if (!Array.isArray(logprobs)) return []
  return logprobs.map((l: OllamaTokenLogprob & { top_logprobs?: OllamaTokenLogprob[] }) => {
    const out: TokenLogprob = tokenLogprobOf(l)
    if (Array.isArray(l.top_logprobs)) out.top = l.top_logprobs.map(tokenLogprobOf)
    return out
  })
}

/** The text of a streamed chunk, chat or generate. */
export function chunkText(part: Part): string | undefined {
  return 'message' in part ? part.message?.content : part.response
}

function chunkThinking(part: Part): string | undefined {
  return 'message' in part ? part.message?.thinking : part.thinking
}

/**
 * The parts of one answer as its chunks arrive. A chunk's reasoning and log probabilities go
 * before its text (as a gateway passes a processor's chunks on), each tool call once whole.
 * With `maxCalls` 1 (`parallelToolCalls: false`) calls after the first are not passed on:
 * Ollama cannot be told to make one call only, so at most one is what the caller gets.
 */
export class AnswerParts {
  /** Chunks that carried text or reasoning: one per token, as Ollama streams. */
  tokens = 0
  private readonly pieces: string[] = []
  private thinking = ''
  private readonly calls: ToolCall[] = []
  private readonly logprobs: TokenLogprob[] = []

  constructor(
    private readonly cb: GenerateCallbacks,
    private readonly maxCalls: number,
  ) {}

  get text(): string {
    return this.pieces.join('')
  }

  /**
   * A plain text chunk (most of them) allocates nothing: reasoning, log probabilities and
   * calls are looked at only when the chunk has them.
   * @throws ERR_BACKEND_UNAVAILABLE for a tool call Ollama got wrong
   */
  take(part: Part): void {
    const text = chunkText(part)
    const thinking = chunkThinking(part)
    const hasThinking = typeof thinking === 'string' && thinking !== ''
    const logprobs = Array.isArray(part.logprobs) && part.logprobs.length > 0 ? part.logprobs : undefined
    if (hasThinking || logprobs) this.takeExtras(hasThinking ? thinking : undefined, logprobs)
    if (typeof text === 'string' && text !== '') {
      this.pieces.push(text)
      this.cb.onToken?.(text)
    }
    if (text || thinking) this.tokens++
    const calls = 'message' in part ? part.message?.tool_calls : undefined
    if (Array.isArray(calls) && calls.length > 0) this.takeCalls(calls)
  }

  /** A chunk's reasoning and log probabilities, as one delta. */
  private takeExtras(thinking: string | undefined, logprobs: unknown[] | undefined): void {
    const delta: GenerationDelta = {}
    if (thinking !== undefined) {
      this.thinking += thinking
      delta.thinking = thinking
    }
    if (logprobs !== undefined) {
      const ours = logprobsOf(logprobs)
      this.logprobs.push(...ours)
      delta.logprobs = ours
    }
    this.cb.onDelta?.(delta)
  }

  /** A chunk's calls (every one checked), those within `maxCalls` passed on. */
  private takeCalls(raw: unknown[]): void {
    const calls = toolCallsOf(raw)
    const room = Math.max(0, this.maxCalls - this.calls.length)
    const taken = calls.length <= room ? calls : calls.slice(0, room)
    if (taken.length === 0) return
    this.calls.push(...taken)
    this.cb.onDelta?.({ toolCalls: taken })
  }

  /**
   * Adds the parts to `result`: the tool calls always, reasoning and log probabilities when
   * they did not go out as deltas.
   */
  complete(result: GenerationResult): GenerationResult {
    if (this.calls.length > 0) result.toolCalls = this.calls
    if (this.cb.onDelta) return result
    if (this.thinking !== '') result.thinking = this.thinking
    if (this.logprobs.length > 0) result.logprobs = this.logprobs
    return result
  }
}
