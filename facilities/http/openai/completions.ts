/** Chat and legacy completions: the request translated to the wire's, the answer over the shared stream writer. */
import type { ServerResponse } from 'node:http'
import type { z } from 'zod'
import type { CancelToken } from '../../../kernel/cancel.js'
import type { GenerateRequest, InferenceSource } from '../../../kernel/wire.js'
import { chatAsCallerNamed } from '../caller-names.js'
import { respondGeneration } from '../stream-writer.js'
import { chatPlan } from './chat-answer.js'
import { chatRequestOf } from './chat-request.js'
import { completionPlan } from './completion-answer.js'
import { unsupported } from './errors.js'
import type { chatSchema, completionSchema } from './requests.js'
import { choiceCount, optionsOf } from './sampling.js'
import { type AnswerBase, OWNER, SSE } from './sse.js'

const answerBase = (id: string, model: string): AnswerBase => ({
  id,
  created: Math.floor(Date.now() / 1000),
  model,
  system_fingerprint: OWNER,
})

/**
 * The wire's names of the fields a backend may refuse, as an OpenAI chat caller names them
 * (`tools`, `tool_choice`, `logprobs` and the penalties are spelled alike). A legacy
 * completion needs none: it sends no `think`, `format` or messages, and the rest it sends
 * (`logprobs`, the penalties, `n`) OpenAI spells as the wire does.
 */
const CALLER_NAMES = {
  think: 'reasoning_effort',
  format: 'response_format',
  'messages.tool_calls': 'messages',
}

/** @throws ERR_UNSUPPORTED, ERR_BAD_REQUEST naming the parameter (before anything is sent) */
export async function chatCompletions(
  res: ServerResponse,
  cancel: CancelToken,
  source: InferenceSource,
  r: z.output<typeof chatSchema>,
  rid: string,
): Promise<void> {
  const wire = chatRequestOf(r)
  const plan = chatPlan(
    answerBase(`chatcmpl-${rid}`, r.model),
    r.stream === true,
    r.stream_options?.include_usage === true,
    chatAsCallerNamed(source, wire, CALLER_NAMES, (i) => `tools[${i}].function.strict`),
  )
  await respondGeneration(res, cancel, plan, SSE)
}

/** The wire request a legacy completion asks for: the prompt as is, no chat template. @throws ERR_UNSUPPORTED */
function generateRequestOf(r: z.output<typeof completionSchema>): GenerateRequest {
  if (r.suffix) throw unsupported('suffix')
  if (r.echo) throw unsupported('echo')
  if (r.best_of != null && r.best_of > 1) throw unsupported('best_of')
  if (Array.isArray(r.prompt) && r.prompt.length !== 1) throw unsupported('prompt as a list of more than one')
  const prompt = Array.isArray(r.prompt) ? (r.prompt[0] as string) : r.prompt
  // OpenAI's legacy completions default to 16 tokens.
  const options = optionsOf(r, r.max_tokens === undefined ? 16 : r.max_tokens)
  return {
    model: r.model,
    prompt,
    raw: true,
    ...(options ? { options } : {}),
    ...(r.logprobs != null ? { logprobs: r.logprobs } : {}),
    ...choiceCount(r.n),
  }
}

/** @throws ERR_UNSUPPORTED, ERR_BAD_REQUEST naming the parameter (before anything is sent) */
export async function completions(
  res: ServerResponse,
  cancel: CancelToken,
  source: InferenceSource,
  r: z.output<typeof completionSchema>,
  rid: string,
): Promise<void> {
  const wire = generateRequestOf(r)
  const plan = completionPlan(
    answerBase(`cmpl-${rid}`, r.model),
    r.stream === true,
    r.stream_options?.include_usage === true,
    (cb) => source.generate(wire, cb),
  )
  await respondGeneration(res, cancel, plan, SSE)
}
