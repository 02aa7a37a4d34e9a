/**
 * Ollama's /api/generate and /api/chat: the request as the wire's (answer-shape.ts), the answer
 * as Ollama's, whole or as NDJSON frames (answer-frames.ts).
 */
import type { ChatRequest, GenerateRequest, GenerationResult } from '../../../kernel/wire.js'
import { type Exchange, sendJson } from '../plumbing.js'
import { type GenerationPlan, respondGeneration, writeFrame } from '../stream-writer.js'
import {
  chatDelta,
  chatMessage,
  generateDelta,
  logprobsField,
  StreamedCalls,
  toolCallsJson,
} from './answer-frames.js'
import { messageOf, shapeOf, toolsOf } from './answer-shape.js'
import { line, metrics, NDJSON, now } from './replies.js'
import {
  chatSchema,
  generateSchema,
  parse,
  rejectUnsupported,
  requireModel,
  toGenerationOptions,
  UNSUPPORTED_IN_CHAT,
  UNSUPPORTED_IN_GENERATE,
  UNSUPPORTED_IN_MESSAGE,
} from './requests.js'

type Json = Record<string, unknown>

/** The last frame of a stream, or the whole answer: `parts` the answer's own (`message`, or `response`…). */
function final(model: string, parts: Json, r: GenerationResult): Json {
  return { model, created_at: now(), ...parts, done_reason: r.doneReason, done: true, ...metrics(r) }
}

function frame(model: string, parts: Json): string {
  return line({ model, created_at: now(), ...parts, done: false })
}

/** Ollama's "load a model" call: one object, even when streaming was asked for. */
async function load(ctx: Exchange, model: string, parts: Json): Promise<void> {
  await ctx.source.generate({ model, prompt: '' }, { cancel: ctx.cancel })
  if (ctx.cancel.aborted) return
  sendJson(ctx.res, 200, { model, created_at: now(), ...parts, done_reason: 'load', done: true })
}

function generatePlan(ctx: Exchange, wire: GenerateRequest, stream: boolean): GenerationPlan {
  const { model } = wire
  return {
    stream,
    run: (cb) => ctx.source.generate(wire, cb),
    // Per token: one object, not a part spread into a frame.
    piece: (text) => line({ model, created_at: now(), response: text, done: false }),
    delta: (d) => {
      const parts = generateDelta(d)
      return parts ? frame(model, parts) : ''
    },
    finish: (res, r) => writeFrame(res, line(final(model, { response: '' }, r))),
    whole: (r) =>
      final(
        model,
        { response: r.text, ...(r.thinking ? { thinking: r.thinking } : {}), ...logprobsField(r.logprobs) },
        r,
      ),
  }
}

/** @throws ERR_BAD_REQUEST, ERR_UNSUPPORTED (`suffix`, `template`, `images`, `_debug_render_only`), and the source's errors */
export async function generate(ctx: Exchange): Promise<void> {
  const body = await ctx.body()
  const model = requireModel(body)
  const req = parse(generateSchema, body)
  rejectUnsupported(req, UNSUPPORTED_IN_GENERATE)
  const prompt = req.prompt ?? ''
  const shape = shapeOf(req)
  if (prompt === '' && !req.system) return load(ctx, model, { response: '' })
  const options = toGenerationOptions(req.options)
  const wire: GenerateRequest = {
    model,
    prompt,
    ...(req.system ? { system: req.system } : {}),
    ...(req.raw != null ? { raw: req.raw } : {}),
    ...(options ? { options } : {}),
    ...shape,
  }
  await respondGeneration(ctx.res, ctx.cancel, generatePlan(ctx, wire, req.stream !== false), NDJSON)
}

function chatPlan(ctx: Exchange, wire: ChatRequest, stream: boolean): GenerationPlan {
  const { model } = wire
  const calls = new StreamedCalls()
  return {
    stream,
    run: (cb) => ctx.source.chat(wire, cb),
    // Per token: the frame built whole, as `frame` with `chatMessage(text)` would make it.
    piece: (text) =>
      line({ model, created_at: now(), message: { role: 'assistant', content: text }, done: false }),
    delta: (d) => {
      const parts = chatDelta(d, calls)
      return parts ? frame(model, parts) : ''
    },
    // Calls the source gave in its result only go in the last frame.
    finish: (res, r) =>
      writeFrame(
        res,
        line(final(model, { message: chatMessage('', undefined, calls.take(r.toolCalls)) }, r)),
      ),
    whole: (r) =>
      final(
        model,
        {
          message: chatMessage(r.text, r.thinking, toolCallsJson(r.toolCalls ?? [])),
          ...logprobsField(r.logprobs),
        },
        r,
      ),
  }
}

/** @throws ERR_BAD_REQUEST, ERR_UNSUPPORTED (`images`, `_debug_render_only`), and the source's errors */
export async function chat(ctx: Exchange): Promise<void> {
  const body = await ctx.body()
  const model = requireModel(body)
  const req = parse(chatSchema, body)
  const messages = req.messages ?? []
  rejectUnsupported(req, UNSUPPORTED_IN_CHAT)
  for (const [i, m] of messages.entries()) rejectUnsupported(m, UNSUPPORTED_IN_MESSAGE, `messages.${i}.`)
  const shape = shapeOf(req)
  if (messages.length === 0) return load(ctx, model, { message: chatMessage('') })
  const options = toGenerationOptions(req.options)
  const wire: ChatRequest = {
    model,
    messages: messages.map(messageOf),
    ...(options ? { options } : {}),
    ...(req.tools?.length ? { tools: toolsOf(req.tools) } : {}),
    ...shape,
  }
  await respondGeneration(ctx.res, ctx.cancel, chatPlan(ctx, wire, req.stream !== false), NDJSON)
}
