/**
 * OpenAI's Responses API over any InferenceSource (the gateway mounts it over the mesh):
 * `POST /v1/responses`, whole or streamed, shaped as OpenAI's API reference so the official
 * `openai` client (`client.responses.create`, `.stream`, `.parse`) and the agents built on it
 * work unchanged.
 *
 * Stateless: every request carries its whole conversation. `previous_response_id`,
 * `conversation`, `background` and stored prompts are refused (ERR_UNSUPPORTED); `store` is
 * accepted, since the SDKs send it, but nothing is stored and the answer says `store: false`;
 * `GET /v1/responses/{id}` and the rest find nothing (404). As in the other layers, a field is
 * ignored only when ignoring it cannot change the kind of answer (`metadata`, `user`,
 * `service_tier`, `safety_identifier`, `prompt_cache_key`, `text.format.strict`); anything asked for that
 * the mesh cannot do is a 400 naming the parameter.
 */
import type { ServerResponse } from 'node:http'
import type { CancelToken } from '../../kernel/cancel.js'
import { MeshError } from '../../kernel/errors.js'
import type { ChatRequest, GenerationResult, InferenceSource } from '../../kernel/wire.js'
import { chatAsCallerNamed } from './caller-names.js'
import { notAllowed, openAIError, sendOpenAIError } from './openai/errors.js'
import {
  DEFAULT_DIALECT_MAX_BODY_BYTES,
  type DialectRoutes,
  type DialectRoutesOptions,
  dialectRoutes,
  isAtOrBelow,
  parseAt,
} from './plumbing.js'
import { chatMessagesOf } from './responses/input.js'
import { type OutputItem, OutputItems } from './responses/output.js'
import {
  formatOf,
  optionsOf,
  type ResponsesRequest,
  refuseStateful,
  responsesSchema,
  thinkOf,
  toolChoiceOf,
  toolsOf,
} from './responses/requests.js'
import { SSE_HEADERS } from './sse.js'
import { deltaFrames, respondGeneration, type StreamFraming, writeFrame } from './stream-writer.js'

export const DEFAULT_RESPONSES_MAX_BODY_BYTES = DEFAULT_DIALECT_MAX_BODY_BYTES

/** The Responses routes' options (the answer's id is `resp_<requestId>`). */
export type ResponsesRoutesOptions = DialectRoutesOptions

/** Answers one request whose `path` (parsed once by the caller: `pathOf`) is `/v1/responses…`. */
export type ResponsesRoutes = DialectRoutes

/** The one Responses route served (stateless: nothing below it). */
export const RESPONSES_PATH = '/v1/responses'

/** Whether `path` is one of the Responses API's (`/v1/responses` and below: those answer 404). */
export const isResponsesPath = (path: string) => isAtOrBelow(path, RESPONSES_PATH)

/**
 * The Responses routes, for mounting in a node:http server next to the others. Every failure
 * becomes OpenAI's error object with its status.
 */
export function createResponsesRoutes(opts: ResponsesRoutesOptions = {}): ResponsesRoutes {
  return dialectRoutes(opts, sendOpenAIError, async (x, path, requestId) => {
    if (path !== RESPONSES_PATH) {
      throw new MeshError('ERR_NOT_FOUND', `${path}: the gateway stores no responses (stateless)`)
    }
    if (x.method !== 'POST') return notAllowed(x.res, 'POST')
    await responses(x.res, x.cancel, x.source, parseAt(responsesSchema, await x.body()), requestId())
  })
}

/**
 * The wire request a Responses request asks for.
 * @throws ERR_UNSUPPORTED naming what the mesh cannot do; ERR_BAD_REQUEST for bad input
 */
export function chatRequestOf(r: ResponsesRequest): ChatRequest {
  refuseStateful(r)
  const chat: ChatRequest = { model: r.model, messages: chatMessagesOf(r) }
  const options = optionsOf(r)
  if (options) chat.options = options
  const tools = toolsOf(r)
  if (tools) chat.tools = tools
  const toolChoice = toolChoiceOf(r)
  if (toolChoice !== undefined) chat.toolChoice = toolChoice
  if (r.parallel_tool_calls != null) chat.parallelToolCalls = r.parallel_tool_calls
  const think = thinkOf(r)
  if (think !== undefined) chat.think = think
  const format = formatOf(r)
  if (format) chat.format = format
  return chat
}

/** The wire's names of the fields a backend may refuse, as a Responses caller names them. */
const CALLER_NAMES = {
  think: 'reasoning.effort',
  format: 'text.format',
  'messages.tool_calls': 'input',
}

type Status = 'in_progress' | 'completed' | 'incomplete' | 'failed'

/** The response object: the request's settings echoed, the output so far, and how it ended. */
function responseObject(
  r: ResponsesRequest,
  id: string,
  createdAt: number,
  status: Status,
  output: OutputItem[],
  result: GenerationResult | null,
  error: { code: string; message: string } | null = null,
) {
  return {
    id,
    object: 'response',
    created_at: createdAt,
    status,
    background: false,
    error,
    incomplete_details: status === 'incomplete' ? { reason: 'max_output_tokens' } : null,
    instructions: r.instructions ?? null,
    max_output_tokens: r.max_output_tokens ?? null,
    model: r.model,
    output: structuredClone(output),
    parallel_tool_calls: r.parallel_tool_calls ?? true,
    previous_response_id: null,
    reasoning: { effort: r.reasoning?.effort ?? null, summary: null },
    store: false,
    temperature: r.temperature ?? 1,
    text: { format: r.text?.format ?? { type: 'text' } },
    tool_choice: r.tool_choice ?? 'auto',
    tools: r.tools ?? [],
    top_p: r.top_p ?? 1,
    truncation: 'disabled',
    usage: result ? usageOf(result) : null,
    metadata: r.metadata ?? {},
  }
}

function usageOf(r: GenerationResult) {
  return {
    input_tokens: r.promptTokens,
    input_tokens_details: { cached_tokens: 0 },
    output_tokens: r.completionTokens,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: r.promptTokens + r.completionTokens,
  }
}

async function responses(
  res: ServerResponse,
  cancel: CancelToken,
  source: InferenceSource,
  r: ResponsesRequest,
  rid: string,
): Promise<void> {
  const chat = chatRequestOf(r)
  const id = `resp_${rid}`
  const createdAt = Math.floor(Date.now() / 1000)
  const items = new OutputItems(rid)
  const snapshot = (
    status: Status,
    result: GenerationResult | null,
    error?: { code: string; message: string },
  ) => responseObject(r, id, createdAt, status, items.output, result, error)
  const statusOf = (result: GenerationResult): Status =>
    result.doneReason === 'length' ? 'incomplete' : 'completed'
  // A failure mid-stream is `response.failed`, the response as it stood with the error.
  const framing: StreamFraming = {
    headers: SSE_HEADERS,
    failure: (err) => {
      const { code, message } = openAIError(err).body.error
      return items.event('response.failed', { response: snapshot('failed', null, { code, message }) })
    },
    sendError: sendOpenAIError,
  }
  await respondGeneration(
    res,
    cancel,
    {
      stream: r.stream === true,
      run: chatAsCallerNamed(source, chat, CALLER_NAMES, (i) => `tools[${i}].strict`),
      opening: () =>
        items.event('response.created', { response: snapshot('in_progress', null) }) +
        items.event('response.in_progress', { response: snapshot('in_progress', null) }),
      piece: (text) => items.text(text),
      delta: (d) => deltaFrames(items, d),
      finish: (res, result) => {
        const frames = items.finish(result)
        const status = statusOf(result)
        const type = status === 'completed' ? 'response.completed' : 'response.incomplete'
        writeFrame(res, frames + items.event(type, { response: snapshot(status, result) }))
      },
      whole: (result) => {
        items.addWhole(result)
        return snapshot(statusOf(result), result)
      },
    },
    framing,
  )
}
