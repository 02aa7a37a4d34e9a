/** Chat and legacy completions: OpenAI's objects and SSE chunks over the shared stream writer. */
import type { ServerResponse } from 'node:http'
import type { z } from 'zod'
import type { CancelToken } from '../../../kernel/cancel.js'
import type { ChatMessage, DoneReason, GenerationResult, InferenceSource } from '../../../kernel/wire.js'
import { respondGeneration, type StreamFraming, writeFrame } from '../stream-writer.js'
import { openAIError, sendOpenAIError, unsupported } from './errors.js'
import { type chatSchema, type completionSchema, messageText, optionsOf } from './requests.js'

export const OWNER = 'llm-mesh'

/** One server-sent event. */
function event(data: unknown): string {
  return `data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`
}

/** Streams as SSE, `data: [DONE]` last; a failure mid-stream is a last `data: {"error": …}` event. */
const SSE: StreamFraming = {
  headers: {
    'Content-Type': 'text/event-stream; charset=utf-8',
    'Cache-Control': 'no-cache',
    Connection: 'keep-alive',
    'X-Accel-Buffering': 'no',
  },
  failure: (err) => event(openAIError(err).body),
  sendError: sendOpenAIError,
}

/** The events that end a stream that went well: the finish reason, usage when asked for, then [DONE]. */
function finishStream(res: ServerResponse, end: unknown, usage: unknown): void {
  writeFrame(res, event(end))
  if (usage) writeFrame(res, event(usage))
  writeFrame(res, event('[DONE]'))
}

const finishReason = (d: DoneReason) => (d === 'length' ? 'length' : 'stop')

function usageOf(r: GenerationResult) {
  return {
    prompt_tokens: r.promptTokens,
    completion_tokens: r.completionTokens,
    total_tokens: r.promptTokens + r.completionTokens,
  }
}

export async function chatCompletions(
  res: ServerResponse,
  cancel: CancelToken,
  source: InferenceSource,
  r: z.output<typeof chatSchema>,
  rid: string,
): Promise<void> {
  if (r.tools && r.tools.length > 0) throw unsupported('tools')
  if (r.response_format && r.response_format.type !== 'text') throw unsupported('response_format')
  const options = optionsOf(r, r.max_completion_tokens ?? r.max_tokens)
  const messages: ChatMessage[] = r.messages.map((m, i) => ({
    role: m.role === 'developer' ? 'system' : m.role,
    content: messageText(m, i),
  }))
  const id = `chatcmpl-${rid}`
  const created = Math.floor(Date.now() / 1000)
  const base = { id, created, model: r.model, system_fingerprint: OWNER }
  const chunk = (text: string, first: boolean) => ({
    ...base,
    object: 'chat.completion.chunk',
    choices: [
      {
        index: 0,
        delta: first ? { role: 'assistant', content: text } : { content: text },
        logprobs: null,
        finish_reason: null,
      },
    ],
  })
  const includeUsage = r.stream_options?.include_usage === true
  await respondGeneration(
    res,
    cancel,
    {
      stream: r.stream === true,
      run: (cb) => source.chat({ model: r.model, messages, ...(options ? { options } : {}) }, cb),
      piece: (text, first) => event(chunk(text, first)),
      finish: (res, result, empty) => {
        if (empty) writeFrame(res, event(chunk('', true)))
        finishStream(
          res,
          {
            ...base,
            object: 'chat.completion.chunk',
            choices: [
              { index: 0, delta: {}, logprobs: null, finish_reason: finishReason(result.doneReason) },
            ],
          },
          includeUsage && { ...base, object: 'chat.completion.chunk', choices: [], usage: usageOf(result) },
        )
      },
      whole: (result) => ({
        ...base,
        object: 'chat.completion',
        choices: [
          {
            index: 0,
            message: { role: 'assistant', content: result.text, refusal: null },
            logprobs: null,
            finish_reason: finishReason(result.doneReason),
          },
        ],
        usage: usageOf(result),
      }),
    },
    SSE,
  )
}

export async function completions(
  res: ServerResponse,
  cancel: CancelToken,
  source: InferenceSource,
  r: z.output<typeof completionSchema>,
  rid: string,
): Promise<void> {
  if (r.suffix) throw unsupported('suffix')
  if (r.echo) throw unsupported('echo')
  if (Array.isArray(r.prompt) && r.prompt.length !== 1) throw unsupported('prompt as a list of more than one')
  const prompt = Array.isArray(r.prompt) ? (r.prompt[0] as string) : r.prompt
  // OpenAI's legacy completions default to 16 tokens.
  const options = optionsOf(r, r.max_tokens === undefined ? 16 : r.max_tokens)
  const id = `cmpl-${rid}`
  const created = Math.floor(Date.now() / 1000)
  const base = { id, created, model: r.model, system_fingerprint: OWNER }
  const chunk = (text: string) => ({
    ...base,
    object: 'text_completion',
    choices: [{ index: 0, text, logprobs: null, finish_reason: null }],
  })
  const includeUsage = r.stream_options?.include_usage === true
  await respondGeneration(
    res,
    cancel,
    {
      stream: r.stream === true,
      run: (cb) =>
        source.generate({ model: r.model, prompt, raw: true, ...(options ? { options } : {}) }, cb),
      piece: (text) => event(chunk(text)),
      finish: (res, result, empty) => {
        if (empty) writeFrame(res, event(chunk('')))
        finishStream(
          res,
          {
            ...base,
            object: 'text_completion',
            choices: [{ index: 0, text: '', logprobs: null, finish_reason: finishReason(result.doneReason) }],
          },
          includeUsage && { ...base, object: 'text_completion', choices: [], usage: usageOf(result) },
        )
      },
      whole: (result) => ({
        ...base,
        object: 'text_completion',
        choices: [
          { index: 0, text: result.text, logprobs: null, finish_reason: finishReason(result.doneReason) },
        ],
        usage: usageOf(result),
      }),
    },
    SSE,
  )
}
