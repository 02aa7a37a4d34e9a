import { join, resolve } from 'node:path'
import { type BackendChoice, BackendFacility } from '../../facilities/backends/backend.facility.js'
import { ThrottledSource } from '../../facilities/backends/throttled.js'
import type { Backend } from '../../facilities/backends/types.js'
import type { CallContext, MethodTable } from '../../facilities/net/rpc-server.js'
import { ChunkWriter, STREAM_CHUNK } from '../../facilities/net/streaming.js'
import { CancelToken, cancelById } from '../../kernel/cancel.js'
import type { ProcessorConfig } from '../../kernel/config.js'
import { MeshError } from '../../kernel/errors.js'
import { gatewayKeyPair, processorProof } from '../../kernel/identity.js'
import {
  addAnswerParts,
  baseModel,
  type ProcessorReply,
  parseEmbedRequest,
  parseInferRequest,
  parseModelRequest,
  runOnSource,
} from '../../kernel/inference.js'
import type { Invite } from '../../kernel/invite.js'
import { StatusVersions } from '../../kernel/status-beat.js'
import { ewma } from '../../kernel/util.js'
import type { InferenceSource, ModelInfo } from '../../kernel/wire.js'
import { BaseWorker, type FacilitySpec, type WorkerOptions } from '../base.worker.js'
import { configInvite, redeemInvite } from '../join-invite.js'
import { backendCheck } from '../readiness.js'
import { LoadStatus, type LoadStatusInfo } from './load-status.js'
import { Maintenance } from './maintenance.js'
import { modelAdminMethods } from './model-admin.js'
import { ProcessorModelPull } from './model-pull.js'
import { ProcessorModelShare } from './model-share.js'
import { ProcessorObservability } from './processor-observability.js'
import { inferDone, inferFailed, tracedEmbed } from './request-trace.js'
import { VouchedTrust } from './vouched-trust.js'

/**
 * The gateways a processor trusts by its own configuration (hex): `firewall.trustedGateways`,
 * its invite's gateways, and the first `maxGateways` identities of `firewall.meshSecret`.
 * Only these may vouch for others (`trust`).
 */
export function configuredGateways(config: ProcessorConfig, invite: Invite | null): Set<string> {
  const fw = config.firewall
  const trusted = new Set([...fw.trustedGateways, ...(invite?.gateways ?? [])].map((k) => k.toLowerCase()))
  if (fw.meshSecret) {
    for (let i = 0; i < fw.maxGateways; i++) {
      trusted.add(gatewayKeyPair(fw.meshSecret, config.mesh, i).publicKey.toString('hex'))
    }
  }
  return trusted
}

/** A duration in ms, rounded to the microsecond. */
function toMicroseconds(ms: number): number {
  return Math.round(ms * 1000) / 1000
}

export type ProcessorStatus = {
  backend: { kind: string; describe: string; reason: string }
  models: string[]
  /** Set while the backend fails to answer. */
  backendError?: string
  /** Its own `GET /metrics`, when `metrics.port` is set. */
  metricsUrl?: string
  capacity: number
  active: number
  /** Of `active`, those the peer asking for this status is not waiting for (not its own, or
   * its own but cancelled and not stopped yet): a gateway's routing load from elsewhere. */
  activeOthers?: number
  queued: number
  weight: number
  served: number
  failed: number
  tokensPerSecond: number
  /** With `firewall.meshSecret`: proof for gateways that admit the secret's processors. */
  meshProof?: string
} & Partial<LoadStatusInfo>

/**
 * Wraps one backend and serves it to gateways: `infer` (streamed or not),
 * `cancel`, `models`, `show`, plus `ping`/`status` with models, capacity and
 * live load.
 */
export class ProcessorWorker extends BaseWorker<ProcessorConfig> {
  private backendFacility: BackendFacility | null = null
  /** Running generations by `<caller key hex>/<stream id>`, so only their caller can cancel them. */
  private readonly running = new Map<string, CancelToken>()
  private served = 0
  private failed = 0
  private tokensPerSecond = 0
  private modelCache: { at: number; models: ModelInfo[] } | null = null
  private readonly pulls = new ProcessorModelPull(this, () => (this.modelCache = null))
  /** Model copies with other processors (model-share.ts; its `corestore` holds the model blobs). */
  readonly shares = new ProcessorModelShare(this, () => (this.modelCache = null))
  private throttled: ThrottledSource | null = null
  /** Keys of unary generations (no caller-given id) in `running`. */
  private nextUnary = 0
  /** Versions of this processor's status: a gateway that holds the current one gets its load only. */
  private readonly statusVersions = new StatusVersions(this.instance)
  /** Loaded models and measured load times, for gateways' routing and placement. */
  private readonly loadStatus = new LoadStatus(() => this.backend)
  /** The invite of `config.invite`, checked at construction. */
  private readonly invite: Invite | null

  /** Gateways trusted by configuration (hex): `trustedGateways`, the invite's, the mesh secret's. */
  private readonly trusted: Set<string>
  /** Gateways those vouch for (`trust`): served too, and cut off when no longer vouched for. */
  private readonly vouched: VouchedTrust
  /** Drained for maintenance (`drain`/`undrain`, SIGUSR2, `draining` in the config). */
  readonly maintenance: Maintenance
  private readonly observability = new ProcessorObservability(
    this.metricsRegister,
    this.config,
    () => this.log,
    {
      inflight: () => this.running.size,
      capacity: () => this.config.backend.maxParallel,
      queued: () => Math.max(0, this.running.size - this.config.backend.maxParallel),
      draining: () => this.drained(),
      tokensPerSecond: () => this.tokensPerSecond,
      modelsLoaded: async () => (await this.backend.runningModels()).length,
      isKnownModel: (m) => this.modelCache?.models.some((info) => baseModel(info.name) === m) ?? false,
    },
  )

  constructor(config: ProcessorConfig, opts: WorkerOptions = {}) {
    super('processor', config, opts)
    this.maintenance = new Maintenance(() => this.log, config.draining)
    this.invite = configInvite('processor', config)
    this.trusted = configuredGateways(config, this.invite)
    this.vouched = new VouchedTrust({
      isVoucher: (key) => this.trusted.has(key),
      store: () => (config.store ? this.store : null),
      log: () => this.log,
      // Still allowed by configuration or another voucher: left alone.
      onRemoved: (keys) => {
        const cut = this.net.disconnect(keys.filter((k) => !this.trusted.has(k)))
        if (cut)
          this.log.info(
            { gateways: keys, connections: cut },
            'closed connections of gateways no longer vouched for',
          )
      },
    })
  }

  /** Gateways that trusted gateways vouch for (`trust`), each listed once. */
  get vouchedGateways(): string[] {
    return this.vouched.keys()
  }

  /** An invite is redeemed before the processor announces itself: a refused one stops the start. */
  protected override async afterStart(): Promise<void> {
    if (!this.invite) return
    let store = null
    try {
      store = this.store
    } catch {}
    await redeemInvite({ invite: this.invite, net: this.net, store, log: this.log })
  }

  get backend(): Backend {
    if (!this.backendFacility) throw new MeshError('ERR_BACKEND_UNAVAILABLE', 'backend is not open')
    return this.backendFacility.backend
  }

  /** What generations run on: the backend, paced when `backend.throttle` is set. */
  private get source(): InferenceSource {
    const throttle = this.config.backend.throttle
    if (!throttle) return this.backend
    this.throttled ??= new ThrottledSource(this.backend, throttle)
    return this.throttled
  }

  /**
   * Only gateways may call a processor: those in `firewall.trustedGateways` and its invite's,
   * those whose identity derives from `firewall.meshSecret`, and those these vouch for
   * (`trust`, read at each connection). Anyone else is refused when they connect.
   * @throws ERR_BAD_CONFIG when nobody is trusted
   */
  protected override firewall(): ((remotePublicKey: Buffer) => boolean) | null {
    if (this.config.firewall.allowAnyPeer) {
      this.log.warn('firewall.allowAnyPeer: any peer may call this processor, bypassing every gateway')
      return null
    }
    if (this.trusted.size === 0) {
      throw MeshError.badConfig(
        'config.firewall: a processor serves gateways only: set firewall.trustedGateways (--trust-gateway), firewall.meshSecret (--mesh-secret), or firewall.allowAnyPeer',
      )
    }
    const logged = new Set<string>()
    return (remotePublicKey) => {
      const key = remotePublicKey.toString('hex')
      const ok = this.trusted.has(key) || this.vouched.has(key)
      // Asked at every connection and every call: a refused peer is logged once (bounded).
      if (!ok && !logged.has(key)) {
        if (logged.size >= 1_024) logged.clear()
        logged.add(key)
        this.log.warn({ peer: key }, 'refused a peer that is not a trusted gateway')
      }
      return !ok
    }
  }

  /** Which engine was chosen and why (auto-selection says it in the log and in `status`). */
  get backendChoice(): BackendChoice | null {
    return this.backendFacility?.choice ?? null
  }

  protected override facilities(): FacilitySpec[] {
    return [
      {
        name: 'backend',
        priority: 40,
        create: () => {
          const base = this.config.store ? resolve(this.config.store) : process.cwd()
          this.backendFacility = new BackendFacility({
            config: this.config.backend,
            defaultModelsDir: join(base, 'models'),
            logger: this.log,
            onModelLoad: (seconds, model) => {
              this.observability.metrics.modelLoaded(seconds)
              this.loadStatus.measured(seconds, model)
            },
          })
          return this.backendFacility
        },
      },
      { name: 'vouched-trust', priority: 45, create: () => this.vouched },
      { name: 'model-share', priority: 50, create: () => this.shares },
      ...this.observability.facilities(() => this.health()),
    ]
  }

  protected override methods(): MethodTable {
    return {
      // Gateways the caller vouches for; only a gateway trusted by configuration may call it.
      trust: (payload, ctx) => this.vouched.set(ctx.remotePublicKey.toString('hex'), payload),
      infer: (payload, ctx) => this.infer(payload, ctx),
      cancel: this.shares.orCancel(
        this.pulls.orCancel((payload, ctx) => cancelById(this.running, payload, ctx.remotePublicKey)),
      ),
      models: async () => ({ models: await this.listModels() }),
      embed: (payload) => {
        this.maintenance.refuseNewWork()
        const req = parseEmbedRequest(payload, this.config.maxPromptBytes)
        return this.observability.backendCall(tracedEmbed(this.log, this.backend, req))
      },
      // Drain or undrain, by a gateway for its admin (`llm-mesh processor drain`).
      maintenance: (payload, ctx) =>
        this.maintenance.fromGateway(payload, ctx.remotePublicKey, () => this.running.size),
      ps: async () => ({ models: await this.backend.runningModels() }),
      show: (payload) => this.backend.showModel(parseModelRequest(payload).model),
      ...this.observability.methods(),
      // Model inventory and changes, for an admin through a gateway; a change is listed at once.
      ...modelAdminMethods(
        () => this.backend,
        () => (this.modelCache = null),
      ),
      ...this.pulls.methods(),
      ...this.shares.methods(),
    }
  }

  /** Models, cached briefly: gateways poll `status` every second. */
  private async listModels(maxAgeMs = 0): Promise<ModelInfo[]> {
    const now = Date.now()
    if (this.modelCache && now - this.modelCache.at <= maxAgeMs) return this.modelCache.models
    const models = await this.backend.listModels()
    this.modelCache = { at: now, models }
    return models
  }

  /**
   * The models for `status`, and the backend's health. A backend that fails to
   * list (Ollama restarting) does not make the processor vanish from gateways:
   * it reports the last known models and the error, and the gateway's breaker
   * deals with the requests that fail meanwhile.
   */
  private async modelsForStatus(): Promise<{ models: string[]; backendError?: string }> {
    try {
      return { models: (await this.listModels(2_000)).map((m) => m.name) }
    } catch (err) {
      const e = MeshError.from(err)
      return { models: (this.modelCache?.models ?? []).map((m) => m.name), backendError: e.message }
    }
  }

  protected override async statusInfo(caller?: Buffer): Promise<ProcessorStatus> {
    const capacity = this.config.backend.maxParallel
    const active = this.running.size
    // Counted here, where it is exact: a gateway subtracting its own in-flight requests from
    // `active` counts one of its own that ended while this reply travelled as someone else's.
    // The caller's own are those under its key (gateways name every generation; an unnamed one
    // counts as elsewhere) that it still waits for: once cancelled (a timeout, the caller gone)
    // it has let go, so until the backend stops they are load from elsewhere.
    let mine = 0
    if (caller) {
      const prefix = `${caller.toString('hex')}/`
      for (const [key, cancel] of this.running) if (!cancel.aborted && key.startsWith(prefix)) mine++
    }
    const choice = this.backendFacility?.choice
    const [models, loaded] = await Promise.all([this.modelsForStatus(), this.loadStatus.info()])
    return {
      backend: {
        kind: this.backend.kind,
        describe: this.backend.describe(),
        reason: choice?.reason ?? '',
      },
      ...models,
      ...loaded,
      capacity,
      active,
      ...(caller ? { activeOthers: Math.max(0, active - mine) } : {}),
      queued: Math.max(0, active - capacity),
      weight: this.config.weight,
      served: this.served,
      failed: this.failed,
      tokensPerSecond: Math.round(this.tokensPerSecond * 10) / 10,
      ...this.maintenance.status(),
      ...this.shares.status(),
      ...this.observability.statusInfo(),
      ...(this.config.firewall.meshSecret
        ? { meshProof: processorProof(this.config.firewall.meshSecret, this.config.mesh, this.publicKeyHex) }
        : {}),
    }
  }

  protected override statusReply(full: Record<string, unknown>, payload: unknown): Record<string, unknown> {
    return this.statusVersions.reply(full, payload)
  }

  protected override drained(): boolean {
    return this.maintenance.on
  }

  /** Ready: its backend lists its models, and it is not drained. */
  protected override async readiness() {
    return [await backendCheck(() => this.listModels(1_000)), ...this.maintenance.checks()]
  }

  private async infer(payload: unknown, ctx: CallContext): Promise<ProcessorReply> {
    const arrived = performance.now()
    this.maintenance.refuseNewWork()
    const req = parseInferRequest(payload, this.config.maxPromptBytes)
    if (req.stream && !req.id) throw MeshError.badRequest('request.id: required when stream is true')
    if ((req.n ?? 1) > 1)
      throw MeshError.unsupported('n', 'is fanned out by a gateway: a processor makes one choice')
    // A caller's stream ids are its own to pick; a unary generation gets one no caller can name.
    const key = req.id ? `${ctx.remotePublicKey.toString('hex')}/${req.id}` : `/unary/${this.nextUnary++}`
    if (this.running.has(key)) throw MeshError.badRequest(`request.id: stream '${req.id}' is already running`)
    const cancel = new CancelToken()
    this.running.set(key, cancel)
    // A caller that goes away cancels its generations.
    const onClose = () => cancel.abort()
    const unwatch = ctx.onClose(onClose)
    const writer =
      req.stream && req.id
        ? new ChunkWriter((chunk) => ctx.emit(STREAM_CHUNK, chunk), req.id, this.config.streamCoalesceMs)
        : null
    const timer = this.observability.generation(req.model)
    const onToken = writer
      ? (text: string) => {
          timer.token()
          writer.write(text)
        }
      : undefined
    try {
      const backendFrom = performance.now()
      const result = await runOnSource(
        this.source,
        req,
        cancel,
        onToken,
        writer ? (d) => writer.writeDelta(d) : undefined,
      )
      const backendMs = performance.now() - backendFrom
      writer?.flush()
      timer.answered(result)
      this.loadStatus.answered(req.model, result.loadMs)
      this.served++
      if (result.evalMs > 0) {
        const tps = (result.completionTokens * 1000) / result.evalMs
        this.tokensPerSecond = ewma(this.tokensPerSecond === 0 ? null : this.tokensPerSecond, tps)
      }
      // Field by field: a backend's result may carry more than the wire's fields. The gateway
      // names the processor itself, and durations go to the microsecond: the key and the
      // doubles' 17 digits were ~100 of a reply's ~270 bytes, and replies batch into UDP packets.
      const reply: ProcessorReply = {
        model: req.model,
        text: req.stream ? '' : result.text,
        doneReason: result.doneReason,
        promptTokens: result.promptTokens,
        completionTokens: result.completionTokens,
        totalMs: toMicroseconds(result.totalMs),
        loadMs: toMicroseconds(result.loadMs),
        promptEvalMs: toMicroseconds(result.promptEvalMs),
        evalMs: toMicroseconds(result.evalMs),
      }
      addAnswerParts(reply, result, req.stream)
      // Asked for by a gateway with tracing on: the processor's time and its backend's.
      if (req.requestId !== undefined)
        reply.timing = inferDone(this.log, req.requestId, req.traceparent, arrived, backendMs, reply)
      return reply
    } catch (err) {
      writer?.flush()
      this.failed++
      timer.failed(err)
      inferFailed(this.log, req.requestId, req.model, err)
      throw err
    } finally {
      unwatch()
      this.running.delete(key)
    }
  }

  protected override abortInflight(): void {
    for (const cancel of this.running.values()) cancel.abort()
  }
}
