/** Ollama's routes, one handler per endpoint, over the source each request is given. */
import { MeshError } from '../../../kernel/errors.js'
import { type Exchange, sendJson } from '../plumbing.js'
import { chat, generate } from './generation.js'
import { type PullRegistry, pullHandler } from './pull.js'
import { detailsOf, modelEntry, modelfileOf, ns } from './replies.js'
import {
  embeddingsSchema,
  embedSchema,
  parse,
  rejectUnsupported,
  requireModel,
  UNSUPPORTED_IN_EMBED,
} from './requests.js'

const ROOT_TEXT = 'Ollama is running'

export type Handler = (ctx: Exchange) => Promise<void>

export interface Route {
  GET?: Handler
  POST?: Handler
  DELETE?: Handler
}

async function root({ res }: Exchange): Promise<void> {
  res.writeHead(200, {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': String(Buffer.byteLength(ROOT_TEXT)),
  })
  res.end(ROOT_TEXT)
}

async function tags({ res, source }: Exchange): Promise<void> {
  const models = await source.listModels()
  sendJson(res, 200, { models: models.map(modelEntry) })
}

async function ps({ res, source }: Exchange): Promise<void> {
  const models = await source.runningModels()
  sendJson(res, 200, {
    models: models.map((m) => ({ ...modelEntry(m), expires_at: m.expiresAt, size_vram: m.sizeVram })),
  })
}

async function show(ctx: Exchange): Promise<void> {
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
}

async function embed(ctx: Exchange): Promise<void> {
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
}

async function embeddings(ctx: Exchange): Promise<void> {
  const body = await ctx.body()
  const model = requireModel(body)
  const req = parse(embeddingsSchema, body)
  const prompt = req.prompt ?? ''
  // An empty prompt still checks (and loads) the model, then embeds nothing, as Ollama does.
  const r = await ctx.source.embed({ model, input: prompt === '' ? [] : [prompt] }, { cancel: ctx.cancel })
  if (ctx.cancel.aborted) return
  sendJson(ctx.res, 200, { embedding: r.embeddings[0] ?? [] })
}

/** A model name field, `model` or its pre-0.2 spelling `name`. */
function modelField(body: Record<string, unknown>): string {
  return requireModel(body, body.model === undefined && body.name !== undefined ? 'name' : 'model')
}

/** A source that cannot change its models (e.g. a processor's own front): refused. */
function unsupported(what: string): MeshError {
  return new MeshError('ERR_UNSUPPORTED', `this server cannot ${what} models`, { param: 'model' })
}

/** DELETE /api/delete `{model}`: 200 with an empty body; 404 for a model nobody holds. */
async function deleteModel(ctx: Exchange): Promise<void> {
  const model = modelField(await ctx.body())
  if (!ctx.source.deleteModel) throw unsupported('delete')
  await ctx.source.deleteModel(model)
  ctx.res.writeHead(200, { 'Content-Length': '0' })
  ctx.res.end()
}

/** POST /api/copy `{source, destination}`: 200 with an empty body; 404 for a missing source. */
async function copyModel(ctx: Exchange): Promise<void> {
  const body = await ctx.body()
  const { source, destination } = body
  if (typeof source !== 'string' || source === '' || typeof destination !== 'string' || destination === '')
    throw MeshError.badRequest('source and destination are required: model names')
  if (!ctx.source.copyModel) throw unsupported('copy')
  await ctx.source.copyModel(source, destination)
  ctx.res.writeHead(200, { 'Content-Length': '0' })
  ctx.res.end()
}

/** Ollama's route table; `/api/version` reports `version`; `/api/pull` asks `registry` for sources. */
export function createRouteTable(version: string, registry?: PullRegistry): Map<string, Route> {
  return new Map<string, Route>([
    ['/', { GET: root }],
    ['/api/version', { GET: async ({ res }) => sendJson(res, 200, { version }) }],
    ['/api/tags', { GET: tags }],
    ['/api/ps', { GET: ps }],
    ['/api/show', { POST: show }],
    ['/api/generate', { POST: generate }],
    ['/api/chat', { POST: chat }],
    ['/api/embed', { POST: embed }],
    ['/api/embeddings', { POST: embeddings }],
    ['/api/delete', { DELETE: deleteModel }],
    ['/api/copy', { POST: copyModel }],
    ['/api/pull', { POST: pullHandler(registry) }],
  ])
}
