/**
 * Ollama-compatible HTTP API over any InferenceSource: a processor's backend
 * today, the whole mesh when a gateway mounts the same routes. Shapes follow
 * Ollama's docs/api.md so existing Ollama clients work unchanged.
 *
 * Request fields we cannot honour follow one rule: a field is ignored when
 * ignoring it cannot change the kind of answer the client gets — resource hints
 * (`keep_alive`), the deprecated `context`, unknown option names, and features
 * left unset (null, false, "" or []). A feature that is asked for (`format`,
 * `tools`, `images`, `think`, `suffix`, `template`, `dimensions`, `logprobs`)
 * is a 400 naming the field, never silently dropped; Ollama itself answers 400
 * when a model lacks the capability.
 *
 * Model names are served as the source names them (no `:latest` appended), so a
 * name read from /api/tags is the same name the mesh routes by. Generate
 * replies carry no `context` (token memory is the source's business).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { z } from 'zod'
import { MeshError } from '../../kernel/errors.js'
import type {
  ChatMessage,
  GenerateCallbacks,
  GenerationOptions,
  GenerationResult,
  InferenceSource,
  ModelDetailsSummary,
  ModelInfo,
} from '../../kernel/wire.js'
import {
  baseUrl,
  closeServer,
  type Exchange,
  listenOn,
  methodOf,
  pathOf,
  retryAfterHeaders,
  sendJson,
  serveRequest,
} from './plumbing.js'

export const DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
/** What /api/version reports unless told otherwise: a recent Ollama, so clients enable their usual features. */
export const DEFAULT_OLLAMA_VERSION = '0.6.4'
const DEFAULT_HOST = '127.0.0.1'
const NS_PER_MS = 1_000_000
const NDJSON_TYPE = 'application/x-ndjson'
const ROOT_TEXT = 'Ollama is running'
const NOT_FOUND_TEXT = '404 page not found'

export interface OllamaRoutesOptions {
  /** What /api/version reports. */
  version?: string
  /** Largest request body accepted; larger ones get 413. Default 8 MiB. */
  maxBodyBytes?: number
}

/**
 * Answers one request whose `path` (the request's, parsed once by the caller:
 * `pathOf`) is not under `/v1/`; an unknown path gets Ollama's 404. `source`
 * serves this one request (a gateway passes the mesh as seen by the caller).
 */
export type OllamaRoutes = (
  req: IncomingMessage,
  res: ServerResponse,
  source: InferenceSource,
  path: string,
) => Promise<void>

// ---------------------------------------------------------------- request schemas

/** Go's JSON decoding treats null as absent; so do we. */
const optionsSchema = z
  .object({
    temperature: z.number().nullish(),
    top_k: z.number().int().nullish(),
    top_p: z.number().nullish(),
    min_p: z.number().nullish(),
    seed: z.number().int().nullish(),
    num_predict: z.number().int().nullish(),
    stop: z.union([z.string(), z.array(z.string())]).nullish(),
    repeat_penalty: z.number().nullish(),
    num_ctx: z.number().int().nullish(),
  })
  .nullish()

const keepAlive = z.union([z.string(), z.number()]).nullish()
const images = z.array(z.string()).nullish()
const think = z.union([z.boolean(), z.string()]).nullish()

const generateSchema = z.object({
  prompt: z.string().nullish(),
  system: z.string().nullish(),
  raw: z.boolean().nullish(),
  stream: z.boolean().nullish(),
  options: optionsSchema,
  keep_alive: keepAlive,
  context: z.array(z.number()).nullish(),
  format: z.unknown().optional(),
  suffix: z.string().nullish(),
  template: z.string().nullish(),
  images,
  think,
  logprobs: z.boolean().nullish(),
})

const messageSchema = z.object({
  role: z.enum(['system', 'user', 'assistant', 'tool']),
  content: z.string().nullish(),
  images,
  // An assistant turn replayed from history may carry these; they do not ask for anything.
  tool_calls: z.array(z.unknown()).nullish(),
  tool_name: z.string().nullish(),
  thinking: z.string().nullish(),
})

const chatSchema = z.object({
  messages: z.array(messageSchema).nullish(),
  stream: z.boolean().nullish(),
  options: optionsSchema,
  keep_alive: keepAlive,
  format: z.unknown().optional(),
  tools: z.array(z.unknown()).nullish(),
  think,
  logprobs: z.boolean().nullish(),
})

const embedSchema = z.object({
  input: z.union([z.string(), z.array(z.string())]).nullish(),
  truncate: z.boolean().nullish(),
  options: optionsSchema,
  keep_alive: keepAlive,
  dimensions: z.number().int().nullish(),
})

const embeddingsSchema = z.object({
  prompt: z.string().nullish(),
  options: optionsSchema,
  keep_alive: keepAlive,
})

type ParsedOptions = z.output<typeof optionsSchema>

/** @throws ERR_BAD_REQUEST naming the first bad field */
function parse<S extends z.ZodType>(schema: S, body: Record<string, unknown>): z.output<S> {
  const result = schema.safeParse(body)
  if (result.success) return result.data
  const issue = result.error.issues[0]
  const path = issue?.path.map(String).join('.') ?? ''
  throw MeshError.badRequest(
    path ? `invalid ${path}: ${issue?.message}` : (issue?.message ?? 'invalid request'),
  )
}

/** Ollama's wording for a missing model. @throws ERR_BAD_REQUEST */
function requireModel(body: Record<string, unknown>, field = 'model'): string {
  const model = body[field]
  if (model === undefined || model === null || model === '') throw MeshError.badRequest('model is required')
  if (typeof model !== 'string') throw MeshError.badRequest(`invalid ${field}: expected a string`)
  return model
}

/** A feature left unset: absent, null, false, "" or []. */
function isUnset(v: unknown): boolean {
  return v === undefined || v === null || v === false || v === '' || (Array.isArray(v) && v.length === 0)
}

/**
 * @param prefix names the fields in the message, e.g. `messages.0.`
 * @throws ERR_BAD_REQUEST for the first of `fields` in `req` that asks for a feature this server lacks
 */
function rejectUnsupported<T>(req: T, fields: ReadonlyArray<keyof T & string>, prefix = ''): void {
  for (const name of fields) {
    if (!isUnset(req[name])) throw MeshError.badRequest(`${prefix}${name} is not supported by this server`)
  }
}

const UNSUPPORTED_IN_GENERATE = ['format', 'suffix', 'template', 'images', 'think', 'logprobs'] as const
const UNSUPPORTED_IN_CHAT = ['format', 'tools', 'think', 'logprobs'] as const
const UNSUPPORTED_IN_MESSAGE = ['images'] as const
const UNSUPPORTED_IN_EMBED = ['dimensions'] as const

function toGenerationOptions(o: ParsedOptions): GenerationOptions | undefined {
  if (!o) return undefined
  const out: GenerationOptions = {}
  if (o.temperature != null) out.temperature = o.temperature
  if (o.top_k != null) out.top_k = o.top_k
  if (o.top_p != null) out.top_p = o.top_p
  if (o.min_p != null) out.min_p = o.min_p
  if (o.seed != null) out.seed = o.seed
  if (o.num_predict != null) out.num_predict = o.num_predict
  if (o.stop != null) out.stop = typeof o.stop === 'string' ? [o.stop] : o.stop
  if (o.repeat_penalty != null) out.repeat_penalty = o.repeat_penalty
  if (o.num_ctx != null) out.num_ctx = o.num_ctx
  return Object.keys(out).length > 0 ? out : undefined
}

// ---------------------------------------------------------------- response shapes

function ns(ms: number): number {
  return Number.isFinite(ms) && ms > 0 ? Math.round(ms * NS_PER_MS) : 0
}

let lastMs = -1
let lastIso = ''

/** `created_at`: the time as ISO 8601, formatted once per millisecond (a busy stream asks many times). */
function now(): string {
  const ms = Date.now()
  if (ms !== lastMs) {
    lastIso = new Date(ms).toISOString()
    lastMs = ms
  }
  return lastIso
}

function metrics(r: GenerationResult) {
  return {
    total_duration: ns(r.totalMs),
    load_duration: ns(r.loadMs),
    prompt_eval_count: r.promptTokens,
    prompt_eval_duration: ns(r.promptEvalMs),
    eval_count: r.completionTokens,
    eval_duration: ns(r.evalMs),
  }
}

function detailsOf(d: ModelDetailsSummary) {
  return {
    parent_model: '',
    format: d.format,
    family: d.family,
    families: d.families,
    parameter_size: d.parameterSize,
    quantization_level: d.quantizationLevel,
  }
}

function modelEntry(m: ModelInfo) {
  return {
    name: m.name,
    model: m.name,
    modified_at: m.modifiedAt,
    size: m.size,
    digest: m.digest,
    details: detailsOf(m.details),
  }
}

/** A Modelfile in `ollama show --modelfile` form, from what a source knows. */
function modelfileOf(name: string, template: string, parameters: string): string {
  const lines = [
    '# Modelfile generated by "ollama show"',
    '# To build a new Modelfile based on this one, replace the FROM line with:',
    `# FROM ${name}`,
    '',
    `FROM ${name}`,
  ]
  if (template) lines.push(`TEMPLATE """${template}"""`)
  for (const line of parameters.split('\n')) {
    const m = /^(\S+)\s+(.*)$/.exec(line.trim())
    if (m) lines.push(`PARAMETER ${m[1]} ${m[2]}`)
  }
  return `${lines.join('\n')}\n`
}

// ---------------------------------------------------------------- plumbing

function errorReply(err: unknown): { status: number; message: string; headers: Record<string, string> } {
  const e = MeshError.from(err)
  return { status: e.httpStatus, message: e.reason, headers: retryAfterHeaders(e) }
}

function sendError(res: ServerResponse, err: unknown, extraHeaders: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) return
  const { status, message, headers } = errorReply(err)
  sendJson(res, status, { error: message }, { ...headers, ...extraHeaders })
}

// ---------------------------------------------------------------- routes

type Handler = (ctx: Exchange) => Promise<void>

interface Route {
  GET?: Handler
  POST?: Handler
}

interface StreamPlan {
  model: string
  stream: boolean
  run(cb: GenerateCallbacks): Promise<GenerationResult>
  /** One streamed piece of text as a frame. */
  frame(text: string): Record<string, unknown>
  /** The last frame: the whole text when not streamed, "" when it was. */
  final(text: string, result: GenerationResult): Record<string, unknown>
}

/**
 * Runs a generation and writes it as NDJSON frames or one object. Headers wait
 * for the first piece of text, so an error before any output still gets its
 * own status; an error after it is a last `{"error"}` line.
 */
async function respondGeneration(ctx: Exchange, plan: StreamPlan): Promise<void> {
  const { res, cancel } = ctx
  let streaming = false
  const startStream = () => {
    if (streaming) return
    streaming = true
    res.writeHead(200, {
      'Content-Type': NDJSON_TYPE,
      'Cache-Control': 'no-cache',
      'X-Accel-Buffering': 'no',
    })
  }
  const writeLine = (obj: unknown) => {
    if (!res.destroyed) res.write(`${JSON.stringify(obj)}\n`)
  }
  const onToken = (text: string) => {
    if (text === '' || cancel.aborted) return
    startStream()
    writeLine(plan.frame(text))
  }

  let result: GenerationResult
  try {
    // Only a stream asks for text as it comes: an answer given whole travels whole, in one message.
    result = await plan.run(plan.stream ? { cancel, onToken } : { cancel })
  } catch (err) {
    if (cancel.aborted) return
    if (!streaming) return sendError(res, err)
    writeLine({ error: errorReply(err).message })
    res.end()
    return
  }
  if (cancel.aborted) return
  if (plan.stream) {
    startStream()
    writeLine(plan.final('', result))
    res.end()
    return
  }
  sendJson(res, 200, plan.final(result.text, result))
}

function createRoutes(version: string): Map<string, Route> {
  const routes = new Map<string, Route>()

  routes.set('/', {
    GET: async ({ res }) => {
      res.writeHead(200, {
        'Content-Type': 'text/plain; charset=utf-8',
        'Content-Length': String(Buffer.byteLength(ROOT_TEXT)),
      })
      res.end(ROOT_TEXT)
    },
  })

  routes.set('/api/version', { GET: async ({ res }) => sendJson(res, 200, { version }) })

  routes.set('/api/tags', {
    GET: async ({ res, source }) => {
      const models = await source.listModels()
      sendJson(res, 200, { models: models.map(modelEntry) })
    },
  })

  routes.set('/api/ps', {
    GET: async ({ res, source }) => {
      const models = await source.runningModels()
      sendJson(res, 200, {
        models: models.map((m) => ({ ...modelEntry(m), expires_at: m.expiresAt, size_vram: m.sizeVram })),
      })
    },
  })

  routes.set('/api/show', {
    POST: async (ctx) => {
      const body = await ctx.body()
      // `name` is the field's pre-0.2 spelling; Ollama still reads it.
      const model = requireModel(body, body.model === undefined && body.name !== undefined ? 'name' : 'model')
      const d = await ctx.source.showModel(model)
      sendJson(ctx.res, 200, {
        modelfile: modelfileOf(d.name, d.template, d.parameters),
        parameters: d.parameters,
        template: d.template,
        details: detailsOf(d.details),
        model_info: d.modelInfo,
        capabilities: d.capabilities,
        modified_at: d.modifiedAt,
      })
    },
  })

  routes.set('/api/generate', {
    POST: async (ctx) => {
      const body = await ctx.body()
      const model = requireModel(body)
      const req = parse(generateSchema, body)
      rejectUnsupported(req, UNSUPPORTED_IN_GENERATE)
      const prompt = req.prompt ?? ''
      const options = toGenerationOptions(req.options)
      if (prompt === '' && !req.system) {
        // Ollama's "load a model" call: one object, even when streaming was asked for.
        await ctx.source.generate({ model, prompt: '' }, { cancel: ctx.cancel })
        if (ctx.cancel.aborted) return
        sendJson(ctx.res, 200, { model, created_at: now(), response: '', done: true, done_reason: 'load' })
        return
      }
      await respondGeneration(ctx, {
        model,
        stream: req.stream !== false,
        run: (cb) =>
          ctx.source.generate(
            {
              model,
              prompt,
              ...(req.system ? { system: req.system } : {}),
              ...(req.raw != null ? { raw: req.raw } : {}),
              ...(options ? { options } : {}),
            },
            cb,
          ),
        frame: (text) => ({ model, created_at: now(), response: text, done: false }),
        final: (text, r) => ({
          model,
          created_at: now(),
          response: text,
          done: true,
          done_reason: r.doneReason,
          ...metrics(r),
        }),
      })
    },
  })

  routes.set('/api/chat', {
    POST: async (ctx) => {
      const body = await ctx.body()
      const model = requireModel(body)
      const req = parse(chatSchema, body)
      const messages = req.messages ?? []
      rejectUnsupported(req, UNSUPPORTED_IN_CHAT)
      for (const [i, m] of messages.entries()) rejectUnsupported(m, UNSUPPORTED_IN_MESSAGE, `messages.${i}.`)
      const options = toGenerationOptions(req.options)
      if (messages.length === 0) {
        await ctx.source.generate({ model, prompt: '' }, { cancel: ctx.cancel })
        if (ctx.cancel.aborted) return
        sendJson(ctx.res, 200, {
          model,
          created_at: now(),
          message: { role: 'assistant', content: '' },
          done_reason: 'load',
          done: true,
        })
        return
      }
      const wire: ChatMessage[] = messages.map((m) => ({ role: m.role, content: m.content ?? '' }))
      await respondGeneration(ctx, {
        model,
        stream: req.stream !== false,
        run: (cb) => ctx.source.chat({ model, messages: wire, ...(options ? { options } : {}) }, cb),
        frame: (text) => ({
          model,
          created_at: now(),
          message: { role: 'assistant', content: text },
          done: false,
        }),
        final: (text, r) => ({
          model,
          created_at: now(),
          message: { role: 'assistant', content: text },
          done_reason: r.doneReason,
          done: true,
          ...metrics(r),
        }),
      })
    },
  })

  routes.set('/api/embed', {
    POST: async (ctx) => {
      const body = await ctx.body()
      const model = requireModel(body)
      const req = parse(embedSchema, body)
      rejectUnsupported(req, UNSUPPORTED_IN_EMBED)
      // As in Ollama, an empty string is no input at all.
      const input = typeof req.input === 'string' ? (req.input === '' ? [] : [req.input]) : (req.input ?? [])
      const r = await ctx.source.embed(
        { model, input, ...(req.truncate != null ? { truncate: req.truncate } : {}) },
        { cancel: ctx.cancel },
      )
      if (ctx.cancel.aborted) return
      sendJson(ctx.res, 200, {
        model,
        embeddings: r.embeddings,
        total_duration: ns(r.totalMs),
        load_duration: ns(r.loadMs),
        prompt_eval_count: r.promptTokens,
      })
    },
  })

  routes.set('/api/embeddings', {
    POST: async (ctx) => {
      const body = await ctx.body()
      const model = requireModel(body)
      const req = parse(embeddingsSchema, body)
      const prompt = req.prompt ?? ''
      // An empty prompt still checks (and loads) the model, then embeds nothing, as Ollama does.
      const r = await ctx.source.embed(
        { model, input: prompt === '' ? [] : [prompt] },
        { cancel: ctx.cancel },
      )
      if (ctx.cancel.aborted) return
      sendJson(ctx.res, 200, { embedding: r.embeddings[0] ?? [] })
    },
  })

  return routes
}

/**
 * The Ollama routes over `source`, for mounting in any node:http server. Never
 * rejects: every failure becomes an Ollama-style `{"error"}` reply (400 bad
 * input, 404 unknown model, 405 wrong method, 413 body over `maxBodyBytes`,
 * a MeshError's own status otherwise, 429 with Retry-After). A client that
 * disconnects aborts its generation through the CancelToken given to the source.
 *
 * @throws ERR_BAD_CONFIG (synchronously) for a bad `maxBodyBytes`
 */
export function createOllamaRoutes(opts: OllamaRoutesOptions = {}): OllamaRoutes {
  const { version = DEFAULT_OLLAMA_VERSION, maxBodyBytes = DEFAULT_MAX_BODY_BYTES } = opts
  if (!Number.isSafeInteger(maxBodyBytes) || maxBodyBytes < 1) {
    throw MeshError.badConfig('maxBodyBytes must be a positive integer')
  }
  const routes = createRoutes(version)

  return async (req, res, source, path) => {
    const route = routes.get(path)
    if (!route) return sendNotFound(res)
    const method = methodOf(req)
    const handler = method === 'GET' || method === 'POST' ? route[method] : undefined
    if (handler) await serveRequest(req, res, maxBodyBytes, source, handler, sendError)
    else sendJson(res, 405, { error: '405 method not allowed' }, { Allow: route.GET ? 'GET, HEAD' : 'POST' })
  }
}

/** Ollama's 404, for a path it has no route for (or a URL that does not parse). */
export function sendNotFound(res: ServerResponse): void {
  sendJson(res, 404, { error: NOT_FOUND_TEXT })
}

// ---------------------------------------------------------------- server

export interface OllamaCompatServerOptions extends OllamaRoutesOptions {
  source: InferenceSource
  /** Interface to bind. Default 127.0.0.1. */
  host?: string
  /** Default 0: any free port (read it from `url`). */
  port?: number
}

/** A standalone Ollama-compatible server over one source (used by processors' tests and local setups). */
export class OllamaCompatServer {
  private readonly host: string
  private readonly port: number
  private readonly routes: OllamaRoutes
  private readonly server: Server
  private bound: number | null = null
  private closing: Promise<void> | null = null

  /** @throws ERR_BAD_CONFIG for a bad port or maxBodyBytes */
  constructor(opts: OllamaCompatServerOptions) {
    const { source, host = DEFAULT_HOST, port = 0, version, maxBodyBytes } = opts
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw MeshError.badConfig('port must be an integer from 0 to 65535')
    }
    this.host = host
    this.port = port
    this.routes = createOllamaRoutes({
      ...(version !== undefined ? { version } : {}),
      ...(maxBodyBytes !== undefined ? { maxBodyBytes } : {}),
    })
    this.server = createServer((req, res) => {
      const path = pathOf(req)
      if (path === null) return sendNotFound(res)
      this.routes(req, res, source, path).catch((err: unknown) => {
        if (res.headersSent) res.destroy()
        else sendError(res, err)
      })
    })
  }

  /** Binds host:port. @throws ERR_UNAVAILABLE when the address cannot be bound or the server was closed */
  async listen(): Promise<void> {
    if (this.closing) throw new MeshError('ERR_UNAVAILABLE', 'server is closed')
    if (this.bound !== null) return
    const port = await listenOn(this.server, this.host, this.port)
    // Closed while binding: the close found nothing listening, so stop what just started.
    if (this.closing) {
      await closeServer(this.server)
      throw new MeshError('ERR_UNAVAILABLE', 'server is closed')
    }
    this.bound = port
  }

  /** Base URL, e.g. http://127.0.0.1:41234. @throws ERR_UNAVAILABLE before `listen()` resolved */
  get url(): string {
    if (this.bound === null) throw new MeshError('ERR_UNAVAILABLE', 'server is not listening')
    return baseUrl(this.host, this.bound)
  }

  /** Stops listening and cuts open connections (aborting their generations). Safe to call twice. */
  close(): Promise<void> {
    this.closing ??= closeServer(this.server)
    return this.closing
  }
}
