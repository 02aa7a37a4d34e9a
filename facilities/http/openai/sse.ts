/** What chat and legacy completions answer alike: SSE framing, usage, and the choices of a result. */

import type { ServerResponse } from 'node:http'
import { addAnswerParts } from '../../../kernel/inference.js'
import type { ChoiceResult, GenerationResult } from '../../../kernel/wire.js'
import { dataEvent, SSE_HEADERS } from '../sse.js'
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

/** Streams as SSE, `data: [DONE]` last; a failure mid-stream is a last `data: {"error": …}` event. */
export const SSE: StreamFraming = {
  headers: SSE_HEADERS,
  failure: (err) => dataEvent(openAIError(err).body),
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
  if (usage) writeFrame(res, dataEvent(usage))
  writeFrame(res, dataEvent('[DONE]'))
}

/** A result's choices: its `choices` with `n` > 1, or the result itself as choice 0. */
export function choicesOf(r: GenerationResult): ChoiceResult[] {
  if (r.choices) return r.choices
  const { text, doneReason, promptTokens, completionTokens } = r
  const choice: ChoiceResult = { index: 0, text, doneReason, promptTokens, completionTokens }
  addAnswerParts(choice, r, false)
  return [choice]
}
