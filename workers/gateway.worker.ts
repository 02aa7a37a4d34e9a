import { type CallContext, type MethodTable, STREAM_CHUNK } from '../facilities/net.facility.js'
import { type ProcessorEntry, RouterFacility } from '../facilities/router.facility.js'
import { BaseWorker, type FacilitySpec, type WorkerOptions } from './base.worker.js'
import type { GatewayConfig } from './lib/config.js'
import { MeshError } from './lib/errors.js'
import { type InferResult, parseInferRequest, parseModelRequest } from './lib/inference.js'
import type { ModelDetails, ModelInfo } from './lib/wire.js'

/** Processors tried for one request that fails before its first token. */
export const MAX_ATTEMPTS = 3
const MODELS_TIMEOUT_MS = 5_000

/** Failures that say the processor, not the request, is the problem: try another. */
const RETRYABLE = new Set(['ERR_UNAVAILABLE', 'ERR_TIMEOUT', 'ERR_BACKEND_UNAVAILABLE', 'ERR_UNKNOWN_METHOD'])

/**
 * The mesh's front door. For now: finds processors on the DHT, keeps them live,
 * and forwards each request to a processor that serves its model, streaming
 * tokens back. Auth, limits and the ledger come with the accounts work.
 */
export class GatewayWorker extends BaseWorker<GatewayConfig> {
  private routerFacility: RouterFacility | null = null
  /** Client requests by `<caller key hex>/<stream id>`, for `cancel`. */
  private readonly running = new Map<string, AbortController>()
  /** Legs running on each processor, failed over when it is dropped. */
  private readonly legs = new Map<string, Set<AbortController>>()

  constructor(config: GatewayConfig, opts: WorkerOptions = {}) {
    super('gateway', config, opts)
  }

  get router(): RouterFacility {
    if (!this.routerFacility) throw new MeshError('ERR_UNAVAILABLE', 'router is not open')
    return this.routerFacility
  }

  protected override facilities(): FacilitySpec[] {
    return [
      {
        name: 'router',
        priority: 50,
        create: () => {
          this.routerFacility = new RouterFacility({
            net: this.net,
            config: this.config.registry,
            logger: this.log,
          })
          this.routerFacility.events.on('drop', (entry: ProcessorEntry) => this.failOver(entry))
          return this.routerFacility
        },
      },
    ]
  }

  protected override methods(): MethodTable {
    return {
      infer: (payload, ctx) => this.infer(payload, ctx),
      cancel: (payload, ctx) => this.cancel(payload, ctx),
      models: async () => ({ models: await this.models() }),
      show: (payload) => this.show(parseModelRequest(payload).model),
    }
  }

  protected override async statusInfo(): Promise<Record<string, unknown>> {
    return { processors: this.router.list(), active: this.running.size }
  }

  private failOver(entry: ProcessorEntry): void {
    const legs = this.legs.get(entry.id)
    if (!legs) return
    const reason = new MeshError('ERR_UNAVAILABLE', `processor ${entry.id.slice(0, 8)} stopped answering`)
    for (const leg of legs) leg.abort(reason)
  }

  /** Union of the models of live processors. */
  async models(): Promise<ModelInfo[]> {
    const byName = new Map<string, ModelInfo>()
    await Promise.all(
      this.router.live().map(async (entry) => {
        try {
          const res = await this.net
            .peer(entry.publicKey)
            .request<{ models: ModelInfo[] }>('models', null, { timeout: MODELS_TIMEOUT_MS })
          for (const m of res.models ?? []) if (!byName.has(m.name)) byName.set(m.name, m)
        } catch (err) {
          this.log.warn({ err, processor: entry.id }, 'models failed')
        }
      }),
    )
    return [...byName.values()].sort((a, b) => a.name.localeCompare(b.name))
  }

  async show(model: string): Promise<ModelDetails> {
    const entry = await this.router.pick(model)
    return this.net
      .peer(entry.publicKey)
      .request<ModelDetails>('show', { model }, { timeout: MODELS_TIMEOUT_MS })
  }

  private async infer(payload: unknown, ctx: CallContext): Promise<InferResult> {
    const req = parseInferRequest(payload, this.config.maxPromptBytes)
    if (req.stream && !req.id) throw MeshError.badRequest('request.id: required when stream is true')
    const key = `${ctx.remotePublicKey.toString('hex')}/${req.id ?? Math.random().toString(36).slice(2)}`
    if (this.running.has(key)) throw MeshError.badRequest(`request.id: stream '${req.id}' is already running`)
    const controller = new AbortController()
    this.running.set(key, controller)
    const onClose = () => controller.abort()
    ctx.channel.once('close', onClose)
    const deadline = setTimeout(
      () => controller.abort(MeshError.timeout(`no answer within ${this.config.inferenceTimeoutMs} ms`)),
      this.config.inferenceTimeoutMs,
    )
    try {
      return await this.forward(req, ctx, controller.signal)
    } finally {
      clearTimeout(deadline)
      ctx.channel.off('close', onClose)
      this.running.delete(key)
    }
  }

  /** Sends the request to processors until one answers; never retries once text was streamed. */
  private async forward(
    req: ReturnType<typeof parseInferRequest>,
    ctx: CallContext,
    signal: AbortSignal,
  ): Promise<InferResult> {
    const tried = new Set<string>()
    let seq = 0
    const { id: clientId, ...body } = req
    for (let attempt = 1; ; attempt++) {
      const entry = await this.router.pick(req.model, tried)
      tried.add(entry.id)
      const leg = new AbortController()
      const onAbort = () => leg.abort(signal.reason)
      signal.addEventListener('abort', onAbort, { once: true })
      const legs = this.legs.get(entry.id) ?? new Set<AbortController>()
      this.legs.set(entry.id, legs)
      legs.add(leg)
      entry.inflight++
      try {
        if (signal.aborted) throw signal.reason instanceof MeshError ? signal.reason : MeshError.cancelled()
        const result = await this.net.peer(entry.publicKey).stream<InferResult>('infer', body, {
          signal: leg.signal,
          timeout: this.config.inferenceTimeoutMs,
          onChunk: (chunk) => ctx.emit(STREAM_CHUNK, { id: clientId, seq: seq++, text: chunk.text }),
        })
        return { ...result, processor: entry.id }
      } catch (err) {
        const e = MeshError.from(err)
        if (signal.aborted) throw signal.reason instanceof MeshError ? signal.reason : e
        if (!RETRYABLE.has(e.code)) throw e
        if (seq > 0) {
          throw new MeshError('ERR_STREAM_BROKEN', `processor failed after ${seq} chunks: ${e.reason}`, {
            chunks: seq,
          })
        }
        this.log.warn({ err: e, processor: entry.id, attempt }, 'processor failed before first token')
        if (e.code !== 'ERR_UNKNOWN_METHOD') this.router.drop(entry, e.reason)
        if (attempt >= MAX_ATTEMPTS) throw MeshError.noProcessor(req.model, `${attempt} attempts failed`)
      } finally {
        entry.inflight--
        legs.delete(leg)
        if (legs.size === 0) this.legs.delete(entry.id)
        signal.removeEventListener('abort', onAbort)
      }
    }
  }

  private cancel(payload: unknown, ctx: CallContext): { cancelled: boolean } {
    const id = (payload as { id?: unknown } | null)?.id
    if (typeof id !== 'string') throw MeshError.badRequest('request.id: expected string')
    const controller = this.running.get(`${ctx.remotePublicKey.toString('hex')}/${id}`)
    controller?.abort()
    return { cancelled: controller !== undefined }
  }

  protected override abortInflight(): void {
    for (const controller of this.running.values()) controller.abort()
  }
}
