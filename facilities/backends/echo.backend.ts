/**
 * The instant backend: no model, no waiting. It answers a chat with the last
 * user message and a generate with its prompt, counting one token per
 * character, and embeds text as a fixed-size character histogram. It exists so
 * benchmarks can measure the mesh itself (gateway, auth, limits, ledger,
 * routing) with an engine that costs nothing, and so tests of limits can run
 * hundreds of requests in a blink. Select it with `backend.type: "echo"`;
 * `auto` never picks it.
 */
import { isCancelled } from '../../kernel/cancel.js'
import { MeshError } from '../../kernel/errors.js'
import { baseModel } from '../../kernel/inference.js'
import type {
  Cancellable,
  ChatRequest,
  EmbedRequest,
  EmbedResult,
  GenerateCallbacks,
  GenerateRequest,
  GenerationResult,
  ModelDetails,
  ModelInfo,
  RunningModel,
} from '../../kernel/wire.js'
import { refuseUnsupported } from './request-checks.js'
import type { Backend } from './types.js'

export const ECHO_MODEL = 'echo'
const EMBED_DIMS = 16
const CREATED = new Date(0).toISOString()

const INFO: ModelInfo = {
  name: ECHO_MODEL,
  size: 0,
  digest: '0'.repeat(64),
  modifiedAt: CREATED,
  details: {
    format: 'none',
    family: 'echo',
    families: ['echo'],
    parameterSize: '0',
    quantizationLevel: 'none',
  },
}

export interface EchoBackendOptions {
  /** Model names served (all echo); default ['echo']. */
  models?: string[]
}

export class EchoBackend implements Backend {
  readonly kind = 'echo' as const
  private readonly models: string[]
  private closed = false

  constructor(opts: EchoBackendOptions = {}) {
    const { models = [ECHO_MODEL] } = opts
    this.models = models
  }

  async open(): Promise<void> {
    this.closed = false
  }

  async close(): Promise<void> {
    this.closed = true
  }

  describe(): string {
    return `echo: instant test backend (${this.models.join(', ')}), not a model`
  }

  private check(model: string, cb: Cancellable = {}): void {
    if (this.closed) throw MeshError.backendUnavailable('echo backend is closed')
    if (!this.models.includes(baseModel(model))) throw MeshError.modelNotFound(model)
    if (isCancelled(cb)) throw MeshError.cancelled()
  }

  /** The echo backend holds no model files and loads nothing: ERR_UNSUPPORTED (after ERR_MODEL_NOT_FOUND). */
  private refuseAdmin(model: string, what: string): never {
    this.check(model)
    throw new MeshError(
      'ERR_UNSUPPORTED',
      `the echo backend cannot ${what} a model: it holds no model files`,
      {
        param: 'model',
      },
    )
  }

  async deleteModel(name: string): Promise<void> {
    this.refuseAdmin(name, 'delete')
  }

  async copyModel(source: string, _destination: string): Promise<void> {
    this.refuseAdmin(source, 'copy')
  }

  async loadModel(name: string): Promise<void> {
    this.refuseAdmin(name, 'load')
  }

  async unloadModel(name: string): Promise<boolean> {
    this.refuseAdmin(name, 'unload')
  }

  async listModels(): Promise<ModelInfo[]> {
    return this.models.map((name) => ({ ...INFO, name }))
  }

  async showModel(name: string): Promise<ModelDetails> {
    this.check(name)
    return {
      ...INFO,
      name,
      template: '{{ .Prompt }}',
      parameters: '',
      modelInfo: { 'general.architecture': 'echo' },
      capabilities: ['completion', 'embedding'],
    }
  }

  async runningModels(): Promise<RunningModel[]> {
    return []
  }

  private answer(
    model: string,
    promptText: string,
    reply: string,
    numPredict: number | undefined,
    cb: GenerateCallbacks = {},
  ): GenerationResult {
    const started = performance.now()
    this.check(model, cb)
    const chars = [...reply]
    const max = numPredict !== undefined && numPredict >= 0 ? numPredict : chars.length
    const text = chars.slice(0, max).join('')
    if (cb.onToken) for (const piece of text.match(/\s*\S+\s*/g) ?? []) cb.onToken(piece)
    const totalMs = performance.now() - started
    return {
      text,
      doneReason: max < chars.length ? 'length' : 'stop',
      promptTokens: [...promptText].length,
      completionTokens: Math.min(max, chars.length),
      totalMs,
      loadMs: 0,
      promptEvalMs: 0,
      evalMs: totalMs,
    }
  }

  async chat(req: ChatRequest, cb?: GenerateCallbacks): Promise<GenerationResult> {
    refuseUnsupported(req, 'echo', {})
    const last = [...req.messages].reverse().find((m) => m.role === 'user')
    const prompt = req.messages.map((m) => m.content).join('')
    return this.answer(req.model, prompt, last?.content ?? '', req.options?.num_predict, cb)
  }

  async generate(req: GenerateRequest, cb?: GenerateCallbacks): Promise<GenerationResult> {
    refuseUnsupported(req, 'echo', {})
    return this.answer(req.model, (req.system ?? '') + req.prompt, req.prompt, req.options?.num_predict, cb)
  }

  async embed(req: EmbedRequest, cb: Cancellable = {}): Promise<EmbedResult> {
    const started = performance.now()
    this.check(req.model, cb)
    const embeddings = req.input.map((text) => {
      const v = new Array<number>(EMBED_DIMS).fill(0)
      for (const ch of text) v[(ch.codePointAt(0) as number) % EMBED_DIMS] += 1
      const norm = Math.hypot(...v) || 1
      return v.map((x) => x / norm)
    })
    return {
      embeddings,
      promptTokens: req.input.reduce((n, s) => n + [...s].length, 0),
      totalMs: performance.now() - started,
      loadMs: 0,
    }
  }
}
