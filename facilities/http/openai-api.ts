/**
 * OpenAI-compatible HTTP API over any InferenceSource (the gateway mounts it
 * over the mesh): /v1/chat/completions, /v1/completions, /v1/embeddings,
 * /v1/models and /v1/models/{id}, shaped as OpenAI's API reference so the
 * official `openai` client and the tools built on it work unchanged.
 *
 * As in the Ollama layer, a field we cannot honour is ignored only when
 * ignoring it cannot change the answer (`user`, `store`, `metadata`,
 * `service_tier`, `parallel_tool_calls` without tools); anything asked for
 * that we cannot do (tools other than functions, `logit_bias`, audio, images,
 * predicted outputs, web search, `echo`, `suffix`, `best_of`) is a 400
 * ERR_UNSUPPORTED naming the parameter. Function tools, structured output
 * (`response_format`), `reasoning_effort`, log probabilities, penalties and
 * `n` become the wire's fields; whether the engine serving the model can give
 * them is its backend's to say, with the same ERR_UNSUPPORTED.
 */
import type { ServerResponse } from 'node:http'
import type { z } from 'zod'
import type { CancelToken } from '../../kernel/cancel.js'
import { MeshError } from '../../kernel/errors.js'
import type { InferenceSource, ModelInfo } from '../../kernel/wire.js'
import { chatCompletions, completions } from './openai/completions.js'
import { notAllowed, sendOpenAIError, unsupported } from './openai/errors.js'
import { chatSchema, completionSchema, embeddingsSchema, parse } from './openai/requests.js'
import { OWNER } from './openai/sse.js'
import {
  DEFAULT_DIALECT_MAX_BODY_BYTES,
  type DialectRoutes,
  type DialectRoutesOptions,
  dialectRoutes,
  sendJson,
} from './plumbing.js'

export const DEFAULT_OPENAI_MAX_BODY_BYTES = DEFAULT_DIALECT_MAX_BODY_BYTES

/** The OpenAI routes' options (a chat completion's id is `chatcmpl-<requestId>`). */
export type OpenAIRoutesOptions = DialectRoutesOptions

/**
 * Answers one request whose `path` (parsed once by the caller: `pathOf`) is
 * under `/v1/`; an unknown endpoint gets OpenAI's 404 error object.
 */
export type OpenAIRoutes = DialectRoutes

// ---------------------------------------------------------------- routes

/**
 * The OpenAI routes, for mounting in a node:http server next to the Ollama
 * ones: the caller sends them the paths under /v1/. Every failure becomes an
 * OpenAI error object with its status.
 */
export function createOpenAIRoutes(opts: OpenAIRoutesOptions = {}): OpenAIRoutes {
  return dialectRoutes(
    opts,
    sendOpenAIError,
    async ({ res, method, cancel, source, body }, path, requestId) => {
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
        await chatCompletions(res, cancel, source, parse(chatSchema, await body()), requestId())
        return
      }
      if (path === '/v1/completions') {
        if (method !== 'POST') return notAllowed(res, 'POST')
        await completions(res, cancel, source, parse(completionSchema, await body()), requestId())
        return
      }
      if (path === '/v1/embeddings') {
        if (method !== 'POST') return notAllowed(res, 'POST')
        await embeddings(res, cancel, source, parse(embeddingsSchema, await body()))
        return
      }
      throw new MeshError('ERR_NOT_FOUND', `unknown endpoint ${path}`)
    },
  )
}

/** A model as OpenAI's API describes one (with the mesh's holder and loaded counts, where given). */
function modelObject(m: ModelInfo) {
  return {
    id: m.name,
    object: 'model' as const,
    created: Math.floor(Date.parse(m.modifiedAt) / 1000) || 0,
    owned_by: OWNER,
    ...(m.held !== undefined ? { held: m.held } : {}),
    ...(m.loaded !== undefined ? { loaded: m.loaded } : {}),
  }
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
