import type { Identity } from '../../facilities/auth/auth.facility.js'
import type { PullCallbacks, PullRequest } from '../../facilities/backends/types.js'
import type { RequestTiming } from '../../facilities/http/http.facility.js'
import type { PullTargets } from '../../facilities/http/ollama/pull.js'
import type { RequestTrace } from '../../facilities/tracing/request-trace.js'
import { CancelToken, noop } from '../../kernel/cancel.js'
import { type ErrorCode, MeshError } from '../../kernel/errors.js'
import { parseEmbedRequest, parseInferRequest } from '../../kernel/inference.js'
import type {
  Cancellable,
  ChatRequest,
  EmbedRequest,
  EmbedResult,
  GenerateCallbacks,
  GenerateRequest,
  GenerationResult,
  InferenceSource,
  ModelDetails,
  ModelInfo,
  RunningModel,
} from '../../kernel/wire.js'
import { doneAndFailed } from './audited-methods.js'
import type { GatewayWorker } from './gateway.worker.js'
import { requireUsable, visibleTo } from './key-models.js'
import type { ModelOpReply } from './model-ops.js'
import { errorOf } from './model-outcome.js'
import { type PullSummary, pullForHttp } from './model-pull.js'

/** Aborts `cancel` when the caller stops (by its CancelToken or its signal); returns the unwatch. */
function watchCaller(caller: Cancellable, cancel: CancelToken): () => void {
  const abort = () => cancel.abort()
  const unwatchToken = caller.cancel?.onAbort(abort) ?? noop
  const { signal } = caller
  if (signal?.aborted) abort()
  if (!signal || signal.aborted) return unwatchToken
  signal.addEventListener('abort', abort, { once: true })
  return () => {
    unwatchToken()
    signal.removeEventListener('abort', abort)
  }
}

/**
 * The mesh as one HTTP caller sees it: the InferenceSource the Ollama and
 * OpenAI route layers serve, going through the gateway's accounts, limits,
 * routing and ledger exactly as an RPC request does.
 */
export class GatewaySource implements InferenceSource {
  constructor(
    private readonly gateway: GatewayWorker,
    private readonly identity: Identity | null,
    private readonly timing: RequestTiming,
    /** The request's trace (tracing on). */
    private readonly trace: RequestTrace | undefined = undefined,
  ) {}

  async listModels(): Promise<ModelInfo[]> {
    return visibleTo(this.identity, await this.gateway.models())
  }

  showModel(name: string): Promise<ModelDetails> {
    requireUsable(this.identity, name)
    return this.gateway.show(name)
  }

  async runningModels(): Promise<RunningModel[]> {
    return visibleTo(this.identity, await this.gateway.runningModels())
  }

  /** Ollama's /api/delete: the model removed from every processor holding it (admins). */
  deleteModel(name: string): Promise<void> {
    return this.modelChange('remove', { model: name, all: true })
  }

  /** Ollama's /api/copy: `destination`, an alias of `source` on every processor holding it (admins). */
  copyModel(source: string, destination: string): Promise<void> {
    return this.modelChange('copy', { model: source, destination })
  }

  /**
   * An admin's model change over HTTP, audited as the RPC's are. Succeeds when every holder
   * did it. @throws ERR_FORBIDDEN (not an admin), ERR_MODEL_NOT_FOUND (no holder), or the
   * first processor's error
   */
  private async modelChange(op: 'remove' | 'copy', payload: Record<string, unknown>): Promise<void> {
    const identity = this.identity
    const action = op === 'remove' ? 'model.remove' : 'model.copy'
    const target = String(payload.model).slice(0, 128)
    if (identity?.role !== 'admin') {
      const actor = identity?.userId ?? 'anonymous'
      await this.gateway.audit.record({ action, actor, target, outcome: 'ERR_FORBIDDEN' })
      throw new MeshError('ERR_FORBIDDEN', 'admins only')
    }
    let reply: ModelOpReply
    try {
      reply = await this.gateway.modelOps.runAs(identity, op, payload)
    } catch (err) {
      const outcome = MeshError.from(err).code
      await this.gateway.audit.record({ action, actor: identity.userId, target, outcome })
      throw err
    }
    const details = { via: 'http', ...doneAndFailed(reply.results) }
    await this.gateway.audit.record({ action, actor: identity.userId, target, details })
    const first = reply.results.find((r) => !r.ok)?.error
    if (first) throw errorOf(first)
  }

  chat(req: ChatRequest, cb: GenerateCallbacks = {}): Promise<GenerationResult> {
    return this.serve({ kind: 'chat', ...req, stream: cb.onToken !== undefined }, cb)
  }

  generate(req: GenerateRequest, cb: GenerateCallbacks = {}): Promise<GenerationResult> {
    return this.serve({ kind: 'generate', ...req, stream: cb.onToken !== undefined }, cb)
  }

  async embed(req: EmbedRequest, cb: Cancellable = {}): Promise<EmbedResult> {
    this.timing.dispatched ??= performance.now()
    return this.gateway.serveEmbed(
      this.identity,
      parseEmbedRequest(
        this.trace ? { ...req, requestId: this.trace.id, traceparent: this.trace.traceparent } : req,
        this.gateway.config.maxPromptBytes,
      ),
      (cancel) => watchCaller(cb, cancel),
      () => {
        this.timing.answered = performance.now()
      },
    )
  }

  /**
   * Ollama's `/api/pull`: admins only (403), onto the processors that can, or copied from the
   * mesh (model-pull.ts); audited as `model.pull`, as the RPC is.
   */
  async pullModel(
    req: PullRequest & { to?: PullTargets; replicas?: number },
    cb: PullCallbacks = {},
  ): Promise<PullSummary> {
    const identity = this.identity
    const record = (outcome: 'ok' | ErrorCode, details?: Record<string, unknown>) =>
      this.gateway.audit.record({
        action: 'model.pull',
        actor: identity?.userId ?? 'anonymous',
        target: String(req.model).slice(0, 128),
        outcome,
        ...(details ? { details: { via: 'http', ...details } } : {}),
      })
    if (identity?.role !== 'admin') {
      await record('ERR_FORBIDDEN')
      throw new MeshError('ERR_FORBIDDEN', 'admins only')
    }
    const cancel = cb.cancel ?? new CancelToken()
    watchCaller(cb, cancel)
    try {
      const summary = await pullForHttp(this.gateway.modelPull, identity, req, { ...cb, cancel })
      await record('ok', doneAndFailed(summary.results))
      return summary
    } catch (err) {
      await record(MeshError.from(err).code)
      throw err
    }
  }

  private async serve(payload: Record<string, unknown>, cb: GenerateCallbacks): Promise<GenerationResult> {
    const req = parseInferRequest(payload, this.gateway.config.maxPromptBytes)
    return this.gateway.serveInfer(this.identity, req, {
      runningKey: null,
      onText: cb.onToken ?? null,
      onDelta: cb.onDelta,
      watch: (cancel) => watchCaller(cb, cancel),
      onDispatch: () => {
        this.timing.dispatched ??= performance.now()
      },
      // The ledger write after the answer is the gateway's time too.
      onAnswer: () => {
        this.timing.answered = performance.now()
      },
      trace: this.trace,
    })
  }
}
