import { createServer } from 'node:http'
import type { Test } from 'brittle'
import { createOpenAIRoutes } from '../../../facilities/http/openai-api.js'
import { baseUrl, closeServer, listenOn, pathOf } from '../../../facilities/http/plumbing.js'
import { MeshError } from '../../../kernel/errors.js'
import type {
  ChatRequest,
  GenerateCallbacks,
  GenerateRequest,
  GenerationResult,
  InferenceSource,
  ModelInfo,
} from '../../../kernel/wire.js'

export const MODEL = 'stand-in'
export const TOKENS = ['Hel', 'lo', ' there']

const MODEL_INFO: ModelInfo = {
  name: MODEL,
  size: 1234,
  digest: 'a'.repeat(64),
  modifiedAt: '2026-01-02T03:04:05.000Z',
  details: {
    format: 'gguf',
    family: 'llama',
    families: ['llama'],
    parameterSize: '1M',
    quantizationLevel: 'F32',
  },
}

/**
 * An InferenceSource with no engine behind it: it answers `TOKENS` for the
 * known model, fails as told (`failBefore` before any text, `failAfter` after
 * it), or with `hang` sends one token and waits to be cancelled. Remembers
 * the last request and how the last generation ended.
 */
export class StandInSource implements InferenceSource {
  failBefore: MeshError | null = null
  failAfter: MeshError | null = null
  hang = false
  lastRequest: ChatRequest | GenerateRequest | null = null
  /** How the last generation ended: 'done', 'cancelled' or an error code. */
  outcome: Promise<string> | null = null

  listModels = async () => [MODEL_INFO]
  showModel = async (name: string) => {
    if (name !== MODEL) throw MeshError.modelNotFound(name)
    return { ...MODEL_INFO, template: '', parameters: '', modelInfo: {}, capabilities: ['completion'] }
  }
  runningModels = async () => []
  embed: InferenceSource['embed'] = async (req) => {
    if (req.model !== MODEL) throw MeshError.modelNotFound(req.model)
    return {
      embeddings: req.input.map((s) => [s.length, 0.5, -1]),
      promptTokens: req.input.length,
      totalMs: 1,
      loadMs: 0,
    }
  }
  chat: InferenceSource['chat'] = (req, cb) => this.run(req, cb)
  generate: InferenceSource['generate'] = (req, cb) => this.run(req, cb)

  private run(req: ChatRequest | GenerateRequest, cb: GenerateCallbacks = {}): Promise<GenerationResult> {
    this.lastRequest = req
    const p = this.produce(req, cb)
    this.outcome = p.then(
      (r) => (r.doneReason === 'cancelled' ? 'cancelled' : 'done'),
      (err: unknown) => MeshError.from(err).code,
    )
    return p
  }

  private async produce(
    req: ChatRequest | GenerateRequest,
    cb: GenerateCallbacks,
  ): Promise<GenerationResult> {
    if (req.model !== MODEL) throw MeshError.modelNotFound(req.model)
    if (this.failBefore) throw this.failBefore
    const stats = { promptTokens: 4, totalMs: 2, loadMs: 0, promptEvalMs: 1, evalMs: 1 }
    if (this.hang) {
      cb.onToken?.(TOKENS[0] as string)
      const cancel = cb.cancel
      await new Promise<void>((resolve) => cancel?.onAbort(() => resolve()))
      return { ...stats, text: TOKENS[0] as string, completionTokens: 1, doneReason: 'cancelled' }
    }
    for (const t of TOKENS) cb.onToken?.(t)
    if (this.failAfter) throw this.failAfter
    const max = req.options?.num_predict
    return {
      ...stats,
      text: TOKENS.join(''),
      completionTokens: TOKENS.length,
      doneReason: max !== undefined && max <= TOKENS.length ? 'length' : 'stop',
    }
  }
}

/** The OpenAI routes over `source` on a loopback port, closed on teardown; resolves with the base URL. */
export async function serveOpenAI(t: Test, source: InferenceSource): Promise<string> {
  const routes = createOpenAIRoutes({ maxBodyBytes: 64 * 1024, requestId: () => 'req1' })
  const server = createServer((req, res) => {
    void routes(req, res, source, pathOf(req) ?? '/v1/')
  })
  const port = await listenOn(server, '127.0.0.1', 0)
  t.teardown(() => closeServer(server))
  return baseUrl('127.0.0.1', port)
}
