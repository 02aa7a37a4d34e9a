/** Ollama's routes, one handler per endpoint, over the source each request is given. */
import type { ChatMessage, GenerationResult } from '../../../kernel/wire.js'
import { type Exchange, sendJson } from '../plumbing.js'
import { respondGeneration, writeFrame } from '../stream-writer.js'
import { detailsOf, line, metrics, modelEntry, modelfileOf, NDJSON, now, ns } from './replies.js'
import {
  chatSchema,
  embeddingsSchema,
  embedSchema,
  generateSchema,
  parse,
  rejectUnsupported,
  requireModel,
  toGenerationOptions,
  UNSUPPORTED_IN_CHAT,
  UNSUPPORTED_IN_EMBED,
  UNSUPPORTED_IN_GENERATE,
  UNSUPPORTED_IN_MESSAGE,
} from './requests.js'

const ROOT_TEXT = 'Ollama is running'

export type Handler = (ctx: Exchange) => Promise<void>

export interface Route {
  GET?: Handler
  POST?: Handler
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

function generateFinal(model: string, text: string, r: GenerationResult) {
  return { model, created_at: now(), response: text, done: true, done_reason: r.doneReason, ...metrics(r) }
}

async function generate(ctx: Exchange): Promise<void> {
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
  const wire = {
    model,
    prompt,
    ...(req.system ? { system: req.system } : {}),
    ...(req.raw != null ? { raw: req.raw } : {}),
    ...(options ? { options } : {}),
  }
  await respondGeneration(
    ctx.res,
    ctx.cancel,
    {
      stream: req.stream !== false,
      run: (cb) => ctx.source.generate(wire, cb),
      piece: (text) => line({ model, created_at: now(), response: text, done: false }),
      finish: (res, r) => writeFrame(res, line(generateFinal(model, '', r))),
      whole: (r) => generateFinal(model, r.text, r),
    },
    NDJSON,
  )
}

function chatFinal(model: string, text: string, r: GenerationResult) {
  return {
    model,
    created_at: now(),
    message: { role: 'assistant', content: text },
    done_reason: r.doneReason,
    done: true,
    ...metrics(r),
  }
}

async function chat(ctx: Exchange): Promise<void> {
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
  await respondGeneration(
    ctx.res,
    ctx.cancel,
    {
      stream: req.stream !== false,
      run: (cb) => ctx.source.chat({ model, messages: wire, ...(options ? { options } : {}) }, cb),
      piece: (text) =>
        line({ model, created_at: now(), message: { role: 'assistant', content: text }, done: false }),
      finish: (res, r) => writeFrame(res, line(chatFinal(model, '', r))),
      whole: (r) => chatFinal(model, r.text, r),
    },
    NDJSON,
  )
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

/** Ollama's route table; `/api/version` reports `version`. */
export function createRouteTable(version: string): Map<string, Route> {
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
  ])
}
