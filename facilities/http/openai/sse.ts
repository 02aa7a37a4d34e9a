/** What chat and legacy completions answer alike: SSE framing, usage, and the choices of a result. */
import type { ServerResponse } from 'node:http'
import type { ChoiceResult, GenerationResult } from '../../../kernel/wire.js'
import { type StreamFraming, writeFrame } from '../stream-writer.js'
import { openAIError, sendOpenAIError } from './errors.js'

export const OWNER = 'llm-mesh'

/** The fields every object of one answer repeats. */
export interface AnswerBase {
  id: string
  created: number
  model: string
  system_fingerprint: string
}

/** One server-sent event. */
export function event(data: unknown): string {
  return `data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`
}

/** Streams as SSE, `data: [DONE]` last; a failure mid-stream is a last `data: {"error": …}` event. */
export const SSE: StreamFraming = {
  headers: {
    'Content-Type': 'text/event-stream; charset=utf-8',
    'Cache-Control': 'no-cache',
    Connection: 'keep-alive',
    'X-Accel-Buffering': 'no',
  },
  failure: (err) => event(openAIError(err).body),
  sendError: sendOpenAIError,
}

/** The counts of an answer: with several choices, the sums over them (the result's own counts). */
export function usageOf(r: GenerationResult) {
  return {
    prompt_tokens: r.promptTokens,
    completion_tokens: r.completionTokens,
    total_tokens: r.promptTokens + r.completionTokens,
  }
}

/** The events that end a stream that went well, after its finish chunks: usage when asked for, then [DONE]. */
export function endStream(res: ServerResponse, usage: unknown): void {
  if (usage) writeFrame(res, event(usage))
  writeFrame(res, event('[DONE]'))
}

/** A result's choices: its `choices` with `n` > 1, or the result itself as choice 0. */
export function choicesOf(r: GenerationResult): ChoiceResult[] {
  if (r.choices) return r.choices
  const { text, doneReason, thinking, toolCalls, logprobs, promptTokens, completionTokens } = r
  return [
    {
      index: 0,
      text,
      doneReason,
      promptTokens,
      completionTokens,
      ...(thinking !== undefined ? { thinking } : {}),
      ...(toolCalls !== undefined ? { toolCalls } : {}),
      ...(logprobs !== undefined ? { logprobs } : {}),
    },
  ]
}
