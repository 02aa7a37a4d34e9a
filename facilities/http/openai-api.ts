/**
 * OpenAI-compatible HTTP API over any InferenceSource (the gateway mounts it
 * over the mesh): /v1/chat/completions, /v1/completions, /v1/embeddings,
 * /v1/models and /v1/models/{id}, shaped as OpenAI's API reference so the
 * official `openai` client and the tools built on it work unchanged.
 *
 * As in the Ollama layer, a field we cannot honour is ignored only when
 * ignoring it cannot change the kind of answer (`user`, `store`, `metadata`,
 * zero penalties, `n: 1`, `parallel_tool_calls` without tools); anything asked
 * for that we cannot do (`tools`, `response_format` other than text, `n > 1`,
 * `logprobs`, images, audio) is a 400 naming the parameter.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { z } from 'zod'
import type { CancelToken } from '../../kernel/cancel.js'
import { MeshError } from '../../kernel/errors.js'
import type {
  ChatMessage,
  DoneReason,
  GenerateCallbacks,
  GenerationOptions,
  GenerationResult,
  InferenceSource,
  ModelInfo,
} from '../../kernel/wire.js'
import { retryAfterHeaders, sendJson, serveRequest } from './plumbing.js'

export const DEFAULT_OPENAI_MAX_BODY_BYTES = 8 * 1024 * 1024
const OWNER = 'llm-mesh'

export interface OpenAIRoutesOptions {
  /** Largest request body accepted; larger ones get 413. */
  maxBodyBytes?: number
  /** Id of the answer to `res` (`chatcmpl-<id>`); default a random one per request. */
  requestId?: (res: ServerResponse) => string
}

/**
 * Answers one request whose `path` (parsed once by the caller: `pathOf`) is
 * under `/v1/`; an unknown endpoint gets OpenAI's 404 error object.
 */
export type OpenAIRoutes = (
  req: IncomingMessage,
  res: ServerResponse,
  source: InferenceSource,
  path: string,
) => Promise<void>

// ---------------------------------------------------------------- errors

const ERROR_TYPES: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  403: 'permission_error',
  404: 'invalid_request_error',
  409: 'invalid_request_error',
  413: 'invalid_request_error',
  429: 'rate_limit_error',
}

const ERROR_CODES: Record<string, string> = {
  ERR_AUTH_INVALID: 'invalid_api_key',
  ERR_AUTH_REQUIRED: 'invalid_api_key',
  ERR_MODEL_NOT_FOUND: 'model_not_found',
  ERR_RATE_LIMITED: 'rate_limit_exceeded',
  ERR_QUOTA_EXCEEDED: 'insufficient_quota',
}

/** OpenAI's error object for any error, with its status and Retry-After when it has one. */
export function openAIError(err: unknown): {
  status: number
  body: { error: { message: string; type: string; param: string | null; code: string } }
  headers: Record<string, string>
} {
  const e = MeshError.from(err)
  const status = e.httpStatus
  const headers = retryAfterHeaders(e)
  const param = typeof e.details?.param === 'string' ? e.details.param : null
  return {
    status,
    body: {
      error: {
        message: e.reason,
        type: ERROR_TYPES[status] ?? (status >= 500 ? 'server_error' : 'invalid_request_error'),
        param,
        code: ERROR_CODES[e.code] ?? e.code.toLowerCase(),
      },
    },
    headers,
  }
}

export function sendOpenAIError(
  res: ServerResponse,
  err: unknown,
  extraHeaders: Record<string, string> = {},
): void {
  if (res.headersSent || res.destroyed) return
  const { status, body, headers } = openAIError(err)
  sendJson(res, status, body, { ...headers, ...extraHeaders })
}

// ---------------------------------------------------------------- requests

const unsupported = (param: string) =>
  new MeshError('ERR_BAD_REQUEST', `${param} is not supported by this server`, { param })

const textPart = z.object({ type: z.literal('text'), text: z.string() }).passthrough()
const content = z.union([
  z.string(),
  z.array(z.union([textPart, z.object({ type: z.string() }).passthrough()])),
])
const chatMessage = z
  .object({
    role: z.enum(['system', 'developer', 'user', 'assistant', 'tool']),
    content: content.nullish(),
    name: z.string().optional(),
  })
  .passthrough()

const sampling = {
  max_tokens: z.number().int().min(0).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().min(0).max(1).nullish(),
  seed: z.number().int().nullish(),
  stop: z.union([z.string(), z.array(z.string()).max(16)]).nullish(),
  n: z.number().int().nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().nullish() }).passthrough().nullish(),
  presence_penalty: z.number().nullish(),
  frequency_penalty: z.number().nullish(),
  logprobs: z.union([z.boolean(), z.number()]).nullish(),
  user: z.string().nullish(),
}

const chatSchema = z
  .object({
    model: z.string().min(1),
    messages: z.array(chatMessage).min(1),
    max_completion_tokens: z.number().int().min(0).nullish(),
    tools: z.array(z.unknown()).nullish(),
    response_format: z.object({ type: z.string() }).passthrough().nullish(),
    ...sampling,
  })
  .passthrough()

const completionSchema = z
  .object({
    model: z.string().min(1),
    prompt: z.union([z.string(), z.array(z.string())]),
    suffix: z.string().nullish(),
    echo: z.boolean().nullish(),
    ...sampling,
  })
  .passthrough()

const embeddingsSchema = z
  .object({
    model: z.string().min(1),
    input: z.union([z.string(), z.array(z.string())]),
    encoding_format: z.enum(['float', 'base64']).nullish(),
    dimensions: z.number().nullish(),
    user: z.string().nullish(),
  })
  .passthrough()

function parse<S extends z.ZodType>(schema: S, body: Record<string, unknown>): z.output<S> {
  const r = schema.safeParse(body)
  if (r.success) return r.data
  const issue = r.error.issues[0]
  const param = issue?.path.join('.') || null
  throw new MeshError(
    'ERR_BAD_REQUEST',
    `${param ? `${param}: ` : ''}${issue?.message ?? 'invalid request'}`,
    {
      ...(param ? { param } : {}),
    },
  )
}

type Sampling = {
  [K in keyof typeof sampling]?: z.output<(typeof sampling)[K]>
}

/** OpenAI sampling parameters as generation options; refuses what would change the answer's kind. */
function optionsOf(r: Sampling, maxTokens: number | null | undefined): GenerationOptions | undefined {
  if (r.n != null && r.n !== 1) throw unsupported('n')
  if (r.logprobs) throw unsupported('logprobs')
  if (r.presence_penalty) throw unsupported('presence_penalty')
  if (r.frequency_penalty) throw unsupported('frequency_penalty')
  const o: GenerationOptions = {}
  if (r.temperature != null) o.temperature = r.temperature
  if (r.top_p != null) o.top_p = r.top_p
  if (r.seed != null) o.seed = r.seed
  if (maxTokens != null) o.num_predict = maxTokens
  if (r.stop != null) o.stop = typeof r.stop === 'string' ? [r.stop] : r.stop
  return Object.keys(o).length ? o : undefined
}

function messageText(m: z.output<typeof chatMessage>, i: number): string {
  if (m.content == null) return ''
  if (typeof m.content === 'string') return m.content
  return m.content
    .map((part, j) => {
      if (part.type !== 'text') throw unsupported(`messages[${i}].content[${j}].type '${part.type}'`)
      return (part as { text: string }).text
    })
    .join('')
}

const finishReason = (d: DoneReason) => (d === 'length' ? 'length' : 'stop')

function usageOf(r: GenerationResult) {
  return {
    prompt_tokens: r.promptTokens,
    completion_tokens: r.completionTokens,
    total_tokens: r.promptTokens + r.completionTokens,
  }
}

// ---------------------------------------------------------------- streaming

interface Plan {
  stream: boolean
  includeUsage: boolean
  run(cb: GenerateCallbacks): Promise<GenerationResult>
  /** One streamed chunk carrying `text` (first: whether it is the first chunk). */
  chunk(text: string, first: boolean): Record<string, unknown>
  /** The chunk that ends the stream with the finish reason. */
  end(result: GenerationResult): Record<string, unknown>
  /** The usage chunk (include_usage). */
  usage(result: GenerationResult): Record<string, unknown>
  /** The whole answer when not streamed. */
  whole(text: string, result: GenerationResult): Record<string, unknown>
}

/**
 * Runs a generation as SSE (`data: {...}` per chunk, `data: [DONE]` last) or
 * one JSON object. Headers wait for the first text, so an early error keeps
 * its own status; a failure after it is a final `data: {"error": …}` event.
 */
async function respond(res: ServerResponse, cancel: CancelToken, plan: Plan): Promise<void> {
  let started = false
  let first = true
  const open = () => {
    if (started) return
    started = true
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    })
  }
  const event = (data: unknown) => {
    if (!res.destroyed) res.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`)
  }
  const onToken = (text: string) => {
    if (text === '' || cancel.aborted) return
    open()
    event(plan.chunk(text, first))
    first = false
  }
  let result: GenerationResult
  try {
    // Only a stream asks for text as it comes: an answer given whole travels whole, in one message.
    result = await plan.run(plan.stream ? { cancel, onToken } : { cancel })
  } catch (err) {
    if (cancel.aborted) return
    if (!started) return sendOpenAIError(res, err)
    event(openAIError(err).body)
    res.end()
    return
  }
  if (cancel.aborted) return
  if (!plan.stream) {
    sendJson(res, 200, plan.whole(result.text, result))
    return
  }
  open()
  if (first) event(plan.chunk('', true))
  event(plan.end(result))
  if (plan.includeUsage) event(plan.usage(result))
  event('[DONE]')
  res.end()
}

// ---------------------------------------------------------------- routes

/**
 * The OpenAI routes, for mounting in a node:http server next to the Ollama
 * ones: the caller sends them the paths under /v1/. Every failure becomes an
 * OpenAI error object with its status.
 */
export function createOpenAIRoutes(opts: OpenAIRoutesOptions = {}): OpenAIRoutes {
  const {
    maxBodyBytes = DEFAULT_OPENAI_MAX_BODY_BYTES,
    requestId = () => Math.random().toString(36).slice(2, 14),
  } = opts

  return (req, res, source, path) =>
    serveRequest(
      req,
      res,
      maxBodyBytes,
      source,
      async ({ method, cancel, body }) => {
        if (path === '/v1/models') {
          if (method !== 'GET') return notAllowed(res, 'GET')
          const models = await source.listModels()
          sendJson(res, 200, { object: 'list', data: models.map(modelObject) })
          return
        }
        if (path.startsWith('/v1/models/')) {
          if (method !== 'GET') return notAllowed(res, 'GET')
          let id: string
          try {
            id = decodeURIComponent(path.slice('/v1/models/'.length))
          } catch {
            throw MeshError.badRequest('model id: bad percent-encoding')
          }
          const m = (await source.listModels()).find((x) => x.name === id)
          if (!m) throw MeshError.modelNotFound(id)
          sendJson(res, 200, modelObject(m))
          return
        }
        if (path === '/v1/chat/completions') {
          if (method !== 'POST') return notAllowed(res, 'POST')
          await chatCompletions(res, cancel, source, parse(chatSchema, await body()), requestId(res))
          return
        }
        if (path === '/v1/completions') {
          if (method !== 'POST') return notAllowed(res, 'POST')
          await completions(res, cancel, source, parse(completionSchema, await body()), requestId(res))
          return
        }
        if (path === '/v1/embeddings') {
          if (method !== 'POST') return notAllowed(res, 'POST')
          await embeddings(res, cancel, source, parse(embeddingsSchema, await body()))
          return
        }
        throw new MeshError('ERR_NOT_FOUND', `unknown endpoint ${path}`)
      },
      sendOpenAIError,
    )
}

/** A model as OpenAI's API describes one. */
function modelObject(m: ModelInfo): { id: string; object: 'model'; created: number; owned_by: string } {
  return {
    id: m.name,
    object: 'model',
    created: Math.floor(Date.parse(m.modifiedAt) / 1000) || 0,
    owned_by: OWNER,
  }
}

/** 405 in OpenAI's error shape. */
function notAllowed(res: ServerResponse, allow: string): void {
  sendJson(
    res,
    405,
    {
      error: {
        message: `${res.req.method} is not allowed here`,
        type: 'invalid_request_error',
        param: null,
        code: 'method_not_allowed',
      },
    },
    { Allow: allow },
  )
}

async function chatCompletions(
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
  await respond(res, cancel, {
    stream: r.stream === true,
    includeUsage: r.stream_options?.include_usage === true,
    run: (cb) => source.chat({ model: r.model, messages, ...(options ? { options } : {}) }, cb),
    chunk: (text, first) => ({
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
    }),
    end: (result) => ({
      ...base,
      object: 'chat.completion.chunk',
      choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: finishReason(result.doneReason) }],
    }),
    usage: (result) => ({ ...base, object: 'chat.completion.chunk', choices: [], usage: usageOf(result) }),
    whole: (text, result) => ({
      ...base,
      object: 'chat.completion',
      choices: [
        {
          index: 0,
          message: { role: 'assistant', content: text, refusal: null },
          logprobs: null,
          finish_reason: finishReason(result.doneReason),
        },
      ],
      usage: usageOf(result),
    }),
  })
}

async function completions(
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
  await respond(res, cancel, {
    stream: r.stream === true,
    includeUsage: r.stream_options?.include_usage === true,
    run: (cb) => source.generate({ model: r.model, prompt, raw: true, ...(options ? { options } : {}) }, cb),
    chunk: (text) => ({
      ...base,
      object: 'text_completion',
      choices: [{ index: 0, text, logprobs: null, finish_reason: null }],
    }),
    end: (result) => ({
      ...base,
      object: 'text_completion',
      choices: [{ index: 0, text: '', logprobs: null, finish_reason: finishReason(result.doneReason) }],
    }),
    usage: (result) => ({ ...base, object: 'text_completion', choices: [], usage: usageOf(result) }),
    whole: (text, result) => ({
      ...base,
      object: 'text_completion',
      choices: [{ index: 0, text, logprobs: null, finish_reason: finishReason(result.doneReason) }],
      usage: usageOf(result),
    }),
  })
}

async function embeddings(
  res: ServerResponse,
  cancel: CancelToken,
  source: InferenceSource,
  r: z.output<typeof embeddingsSchema>,
): Promise<void> {
  if (r.dimensions != null) throw unsupported('dimensions')
  const input = typeof r.input === 'string' ? [r.input] : r.input
  if (input.length === 0)
    throw new MeshError('ERR_BAD_REQUEST', 'input must not be empty', { param: 'input' })
  if (input.some((s) => s === '')) {
    throw new MeshError('ERR_BAD_REQUEST', 'input strings must not be empty', { param: 'input' })
  }
  const result = await source.embed({ model: r.model, input }, { cancel })
  if (cancel.aborted) return
  const base64 = r.encoding_format === 'base64'
  sendJson(res, 200, {
    object: 'list',
    data: result.embeddings.map((v, index) => ({
      object: 'embedding',
      index,
      embedding: base64 ? Buffer.from(Float32Array.from(v).buffer).toString('base64') : v,
    })),
    model: r.model,
    usage: { prompt_tokens: result.promptTokens, total_tokens: result.promptTokens },
  })
}
