/**
 * Anthropic's Messages API over any InferenceSource (the gateway mounts it over the mesh):
 * `POST /v1/messages`, whole or streamed, shaped as Anthropic's API reference so the official
 * `@anthropic-ai/sdk` client and the tools built on it (Claude Code and the like, pointed at
 * the gateway's base URL) work unchanged.
 *
 * As in the other layers, a field is ignored only when ignoring it cannot change the kind of
 * answer (`metadata`, `service_tier`, `cache_control`, `thinking.budget_tokens` beyond
 * `max_tokens`); anything asked for that the mesh cannot do (images, documents, server tools,
 * MCP servers, containers) is a 400 `invalid_request_error` naming it (ERR_UNSUPPORTED).
 * `count_tokens` is not served: the gateway has no tokenizer of its own (404).
 */
import type { ServerResponse } from 'node:http'
import type { CancelToken } from '../../kernel/cancel.js'
import { MeshError } from '../../kernel/errors.js'
import type { ChatRequest, InferenceSource } from '../../kernel/wire.js'
import { MessageBlocks, messageObject } from './anthropic/answer.js'
import { chatMessagesOf } from './anthropic/conversation.js'
import { anthropicError, notAllowed, sendAnthropicError } from './anthropic/errors.js'
import {
  formatOf,
  type MessagesRequest,
  messagesSchema,
  optionsOf,
  refuseServerFeatures,
  thinkOf,
  toolChoiceOf,
  toolsOf,
} from './anthropic/requests.js'
import { chatAsCallerNamed } from './caller-names.js'
import {
  DEFAULT_DIALECT_MAX_BODY_BYTES,
  type DialectRoutes,
  type DialectRoutesOptions,
  dialectRoutes,
  isAtOrBelow,
  parseAt,
} from './plumbing.js'
import { namedEvent, SSE_HEADERS } from './sse.js'
import { deltaFrames, respondGeneration, type StreamFraming, writeFrame } from './stream-writer.js'

export const DEFAULT_ANTHROPIC_MAX_BODY_BYTES = DEFAULT_DIALECT_MAX_BODY_BYTES

/** The Anthropic routes' options (the answer's id is `msg_<requestId>`). */
export type AnthropicRoutesOptions = DialectRoutesOptions

/** Answers one request whose `path` (parsed once by the caller: `pathOf`) is `/v1/messages…`. */
export type AnthropicRoutes = DialectRoutes

/** The one Anthropic route served. */
export const MESSAGES_PATH = '/v1/messages'

/** Whether `path` is one of Anthropic's (`/v1/messages` and below: those answer 404 in Anthropic's shape). */
export const isAnthropicPath = (path: string) => isAtOrBelow(path, MESSAGES_PATH)

/** The wire's names of the fields a backend may refuse, as an Anthropic caller names them. */
const CALLER_NAMES = {
  think: 'thinking',
  format: 'output_config.format',
  'messages.tool_calls': 'messages',
}

/** SSE with Anthropic's event names; a failure mid-stream is an `error` event. */
const FRAMING: StreamFraming = {
  headers: SSE_HEADERS,
  failure: (err) => namedEvent('error', anthropicError(err).body),
  sendError: sendAnthropicError,
}

/**
 * The Anthropic routes, for mounting in a node:http server next to the others. Every failure
 * becomes Anthropic's error object with its status.
 */
export function createAnthropicRoutes(opts: AnthropicRoutesOptions = {}): AnthropicRoutes {
  return dialectRoutes(opts, sendAnthropicError, async (x, path, requestId) => {
    if (path !== MESSAGES_PATH) throw new MeshError('ERR_NOT_FOUND', `unknown endpoint ${path}`)
    if (x.method !== 'POST') return notAllowed(x.res, 'POST')
    await messages(x.res, x.cancel, x.source, parseAt(messagesSchema, await x.body()), requestId())
  })
}

/**
 * The wire request a Messages request asks for.
 * @throws ERR_UNSUPPORTED naming what the mesh cannot do; ERR_BAD_REQUEST for bad input
 */
export function chatRequestOf(r: MessagesRequest): ChatRequest {
  refuseServerFeatures(r)
  const chat: ChatRequest = { model: r.model, messages: chatMessagesOf(r), options: optionsOf(r) }
  const tools = toolsOf(r)
  if (tools) chat.tools = tools
  Object.assign(chat, toolChoiceOf(r))
  const think = thinkOf(r)
  if (think !== undefined) chat.think = think
  const format = formatOf(r)
  if (format) chat.format = format
  return chat
}

async function messages(
  res: ServerResponse,
  cancel: CancelToken,
  source: InferenceSource,
  r: MessagesRequest,
  rid: string,
): Promise<void> {
  const chat = chatRequestOf(r)
  const id = `msg_${rid}`
  const blocks = new MessageBlocks(r.thinking?.display !== 'omitted')
  await respondGeneration(
    res,
    cancel,
    {
      stream: r.stream === true,
      run: chatAsCallerNamed(source, chat, CALLER_NAMES, (i) => `tools[${i}].strict`),
      opening: () =>
        namedEvent('message_start', { type: 'message_start', message: messageObject(id, r.model, [], null) }),
      piece: (text) => blocks.text(text),
      delta: (d) => deltaFrames(blocks, d),
      finish: (res, result) => writeFrame(res, blocks.finish(result)),
      whole: (result) => {
        blocks.addWhole(result)
        return messageObject(id, r.model, blocks.content, result)
      },
    },
    FRAMING,
  )
}
