import type { Identity } from '../../facilities/auth/auth.facility.js'
import type { PullCallbacks, PullRequest } from '../../facilities/backends/types.js'
import type { RequestTiming } from '../../facilities/http/http.facility.js'
import type { PullTargets } from '../../facilities/http/ollama/pull.js'
import type { RequestTrace } from '../../facilities/tracing/request-trace.js'
import { CancelToken, noop } from '../../kernel/cancel.js'
import { MeshError } from '../../kernel/errors.js'
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
import type { GatewayWorker } from './gateway.worker.js'
import { requireUsable, visibleTo } from './key-models.js'
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

  /** Ollama's `/api/pull`: admins only (403), onto the processors that can (model-pull.ts). */
  pullModel(req: PullRequest & { to?: PullTargets }, cb: PullCallbacks = {}): Promise<PullSummary> {
    if (this.identity?.role !== 'admin') throw new MeshError('ERR_FORBIDDEN', 'admins only')
    const cancel = cb.cancel ?? new CancelToken()
    watchCaller(cb, cancel)
    return pullForHttp(this.gateway, this.identity, req, { ...cb, cancel })
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
