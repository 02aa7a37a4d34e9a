import type { KeyPair } from 'hyperdht'
import type { AuthFacility, Identity } from '../../facilities/auth/auth.facility.js'
import { Cors } from '../../facilities/http/cors.js'
import { HttpFacility } from '../../facilities/http/http.facility.js'
import type { LimitsFacility } from '../../facilities/limits.facility.js'
import type { CallContext, MethodTable } from '../../facilities/net/rpc-server.js'
import { STREAM_CHUNK } from '../../facilities/net/streaming.js'
import { type ProcessorEntry, RouterFacility } from '../../facilities/router/router.facility.js'
import { Tracer } from '../../facilities/tracing/request-trace.js'
import type { UsageFacility } from '../../facilities/usage/usage.facility.js'
import { CancelToken, cancelById } from '../../kernel/cancel.js'
import type { GatewayConfig } from '../../kernel/config.js'
import { MeshError } from '../../kernel/errors.js'
import { gatewayKeyPair } from '../../kernel/identity.js'
import {
  type InferRequest,
  type InferResult,
  parseEmbedRequest,
  parseInferRequest,
  parseModelRequest,
} from '../../kernel/inference.js'
import type { EmbedRequest, HealthCheck, ModelDetails, ModelInfo, RunningModel } from '../../kernel/wire.js'

export type { EmbedReply, Sink } from './inference-pipeline.js'

import { BaseWorker, type FacilitySpec, type WorkerOptions } from '../base.worker.js'
import { processorsCheck, storeCheck } from '../readiness.js'
import { AccountFacilities } from './account-facilities.js'
import { Accounts } from './accounts.js'
import { ProcessorAdmission } from './admission.js'
import { GatewayAudit } from './audit.js'
import { Catalog } from './catalog.js'
import { EmbedBatches } from './embed-batches.js'
import { GatewayMesh } from './gateway-mesh.js'
import { GatewaySource } from './http-source.js'
import { type EmbedReply, InferencePipeline, type Sink, withDeadline } from './inference-pipeline.js'
import { GatewayInvites } from './invites.js'
import { requireUsable, visibleTo } from './key-models.js'
import { Metering } from './metering.js'
import { ModelDesired } from './model-desired.js'
import { ModelInventory } from './model-inventory.js'
import { ModelOps } from './model-ops.js'
import { GatewayModelPull } from './model-pull.js'
import { GatewayObservability } from './observability.js'
import { placementSpecs } from './placement.js'
import { ProcessorDrain } from './processor-drain.js'
import { endTrace, ledgerIdOf, startTrace, traceEmbed } from './tracing.js'

/**
 * The mesh's front door: every request is authenticated (API key or access JWT), admitted against
 * the caller's rate limits and quotas, forwarded to a processor that serves its model (tokens
 * streamed back), and written to the usage ledger before the answer is returned.
 */
export class GatewayWorker extends BaseWorker<GatewayConfig> {
  private routerFacility: RouterFacility | null = null
  private httpFacility: HttpFacility | null = null
  private readonly acct: AccountFacilities

  private readonly accounts: Accounts
  private readonly catalog: Catalog
  private readonly pipeline: InferencePipeline
  private readonly embeds: EmbedBatches
  private readonly metering: Metering
  private readonly admission: ProcessorAdmission
  private readonly invites: GatewayInvites
  private readonly mesh: GatewayMesh
  private readonly drains: ProcessorDrain
  private readonly inventory: ModelInventory
  /** Model changes on processors (admins): RPC `modelRemove`…, HTTP /api/delete and /api/copy. */
  readonly modelOps: ModelOps
  /** Pulls and copies of models onto processors (admins, the reconcile loop, placement). */
  readonly modelPull: GatewayModelPull
  /** Desired state of the models (admins' minimums) and the loop that reconciles it. */
  readonly desired = new ModelDesired(this, () => this.inventory)
  private readonly observability = new GatewayObservability(this.metricsRegister, {
    router: () => this.routerFacility,
    net: () => (this.routerFacility ? this.net : null),
    pipeline: () => this.pipeline,
    usage: () => this.acct.usage,
  })
  /** The audit trail: `audit.record(…)` for what the gateway does outside its audited methods. */
  readonly audit = new GatewayAudit(
    () => this.acct,
    () => this.accounts,
    () => this.log,
  )
  /** Request ids and per-hop timing (`tracing.enabled`); null: off. */
  readonly tracer = this.config.tracing.enabled
    ? new Tracer(this.log, this.config.tracing.serverTiming)
    : null

  constructor(config: GatewayConfig, opts: WorkerOptions = {}) {
    super('gateway', config, opts)
    const router = () => this.router
    const net = () => this.net
    const log = () => this.log
    this.catalog = new Catalog(router, net, log)
    this.pipeline = new InferencePipeline(config, router, net, log)
    this.modelPull = new GatewayModelPull(this, this.pipeline.running)
    this.embeds = new EmbedBatches(config, router, net)
    this.acct = new AccountFacilities({
      config,
      store: () => this.store,
      log,
      quiet: () => this.metering.quiet(),
      onLedgerCommit: this.observability.routing.ledgerCommit,
    })
    this.accounts = new Accounts(config, {
      auth: () => this.acct.auth,
      usage: () => this.acct.ledger,
      limits: () => this.acct.limiter,
    })
    const invites = () => this.acct.invites
    this.admission = new ProcessorAdmission(config, invites, log, () => this.mesh)
    const store = () => (config.store ? this.store : null)
    const routerIfOpen = () => this.routerFacility
    this.mesh = new GatewayMesh({
      config,
      net,
      router,
      routerIfOpen,
      invites,
      store,
      log,
      admission: this.admission,
    })
    this.invites = new GatewayInvites({
      gatewaysChanged: () => this.mesh.gatewaysChanged(),
      config,
      accounts: this.accounts,
      invites,
      router,
      admission: this.admission,
      publicKeyHex: () => this.publicKeyHex,
    })
    this.drains = new ProcessorDrain({
      router,
      net,
      log,
      requireAdmin: (payload) => this.accounts.requireAdmin(payload),
    })
    this.inventory = new ModelInventory({ router, net, log, identify: (p) => this.accounts.identify(p) })
    const inventory = this.inventory
    this.modelOps = new ModelOps({
      router,
      net,
      log,
      inventory,
      requireAdmin: (p) => this.accounts.requireAdmin(p),
    })
    this.metering = new Metering(
      () => this.acct.ledger,
      () => this.acct.limiter,
      (identity) => this.accounts.subjectOf(identity),
    )
  }

  get router(): RouterFacility {
    if (!this.routerFacility) throw new MeshError('ERR_UNAVAILABLE', 'router is not open')
    return this.routerFacility
  }

  /** Accounts, or null when `auth.enabled` is false. */
  get auth(): AuthFacility | null {
    return this.acct.auth
  }

  get usage(): UsageFacility | null {
    return this.acct.usage
  }

  get limits(): LimitsFacility | null {
    return this.acct.limits
  }

  /** Base URL of the HTTP APIs, or null when they are off. */
  get httpUrl(): string | null {
    return this.httpFacility?.url ?? null
  }

  protected override facilities(): FacilitySpec[] {
    const accounts = this.acct.specs()
    const http: FacilitySpec[] = this.config.http.enabled
      ? [
          {
            name: 'http',
            priority: 60,
            create: () => {
              this.httpFacility = new HttpFacility({
                host: this.config.http.host,
                port: this.config.http.port,
                maxBodyBytes: this.config.http.maxBodyBytes,
                maxConnections: this.config.http.maxConnections,
                logger: this.log,
                authenticate: (token) => (this.acct.auth ? this.acct.auth.authenticate(token) : null),
                sourceFor: (identity, timing, trace) => new GatewaySource(this, identity, timing, trace),
                tracer: this.tracer,
                metrics: this.config.http.metrics ? this.observability.http : null,
                health: () => this.health(),
                cors: this.config.http.corsOrigins.length ? new Cors(this.config.http.corsOrigins) : null,
              })
              return this.httpFacility
            },
          },
        ]
      : []
    return [
      ...accounts,
      ...http,
      ...this.observability.facilities(
        this.config.metrics,
        () => this.log,
        () => this.health(),
      ),
      // Joins with the config's invite before the router starts; vouches for joined gateways.
      { name: 'gateway-mesh', priority: 48, create: () => this.mesh },
      { name: 'model-desired', priority: 55, create: () => this.desired },
      {
        name: 'router',
        priority: 50,
        create: () => {
          this.routerFacility = new RouterFacility({
            net: this.net,
            config: this.config.registry,
            routing: this.config.routing,
            logger: this.log,
            admission: (publicKey, status) => this.admission.refusal(publicKey, status),
            onQueueWait: this.observability.routing.queueWait,
          })
          const events = this.routerFacility.events
          this.mesh.watch(events)
          events.on('drop', (entry: ProcessorEntry) => this.pipeline.failOver(entry, 'is gone'))
          events.on('restarted', (entry: ProcessorEntry) => this.pipeline.failOver(entry, 'restarted'))
          events.on('unreachable', (entry: ProcessorEntry) => this.pipeline.moveWaiting(entry))
          return this.routerFacility
        },
      },
      ...placementSpecs(this, this.config.placement, this.metricsRegister),
    ]
  }

  protected override fixedIdentity(): KeyPair | null {
    const { meshSecret, mesh, gatewayIndex } = this.config
    return meshSecret ? gatewayKeyPair(meshSecret, mesh, gatewayIndex) : null
  }

  protected override async afterStart(): Promise<void> {
    this.admission.announce()
    if (!this.config.auth.enabled) {
      this.log.warn(
        'auth is disabled: anyone who reaches this gateway can use the mesh, unlimited and unaccounted',
      )
    }
  }

  protected override methods(): MethodTable {
    return this.observability.rpc({
      ...this.audit.methods(),
      ...this.audit.wrap({ ...this.accounts.methods(), ...this.invites.methods() }),
      ...this.mesh.methods(),
      ...this.audit.wrap(this.drains.methods()),
      ...this.inventory.methods(this.desired),
      ...this.audit.wrap(this.desired.methods((p) => this.accounts.requireAdmin(p))),
      ...this.audit.wrap(this.modelOps.methods()),
      ...this.audit.wrap(this.modelPull.methods((p) => this.accounts.requireAdmin(p))),
      // Open: how a caller gets a credential.
      // Any user.
      infer: (payload, ctx) => this.infer(payload, ctx),
      // A caller that goes away stops waiting for a slot.
      embed: (payload, ctx) =>
        this.serveEmbed(
          this.accounts.identify(payload),
          traceEmbed(this.tracer, parseEmbedRequest(payload, this.config.maxPromptBytes)),
          (cancel) => ctx.onClose(() => cancel.abort()),
        ),
      ps: async (payload) => {
        const identity = this.accounts.identify(payload)
        return { models: visibleTo(identity, await this.runningModels()) }
      },
      cancel: (payload, ctx) => cancelById(this.pipeline.running, payload, ctx.remotePublicKey),
      models: async (payload) => {
        const identity = this.accounts.identify(payload)
        return { models: visibleTo(identity, await this.models()) }
      },
      show: (payload) => {
        const { model } = parseModelRequest(payload)
        requireUsable(this.accounts.identify(payload), model)
        return this.show(model)
      },
      status: (payload) => {
        this.accounts.identify(payload)
        return this.localStatus()
      },
    })
  }

  /** Ready: its store open (when it has one) and at least one processor serving. */
  protected override async readiness(): Promise<HealthCheck[]> {
    const checks = [processorsCheck(this.routerFacility?.list() ?? null)]
    return this.config.store ? [storeCheck(this.store), ...checks] : checks
  }

  protected override async statusInfo(): Promise<Record<string, unknown>> {
    return {
      processors: this.router.list(),
      active: this.pipeline.active,
      queued: this.router.queued,
      strategy: this.router.strategy,
      health: await this.health(),
    }
  }

  /** Union of the models of live processors. */
  models(): Promise<ModelInfo[]> {
    return this.catalog.models()
  }

  /** Model details from a processor that serves it. @throws ERR_MODEL_NOT_FOUND */
  show(model: string): Promise<ModelDetails> {
    return this.catalog.show(model)
  }

  /** Models loaded on every processor (Ollama's /api/ps across the mesh). */
  runningModels(): Promise<RunningModel[]> {
    return this.catalog.runningModels()
  }

  /**
   * Authenticates, admits, forwards and accounts one inference request. The
   * answer is returned only once its usage record is durable.
   * @throws ERR_AUTH_*, ERR_FORBIDDEN (model not allowed for the key), ERR_RATE_LIMITED,
   *         ERR_QUOTA_EXCEEDED, and whatever forwarding throws
   */
  private async infer(payload: unknown, ctx: CallContext): Promise<InferResult> {
    const identity = this.accounts.identify(payload)
    const req = parseInferRequest(payload, this.config.maxPromptBytes)
    if (req.stream && !req.id) throw MeshError.badRequest('request.id: required when stream is true')
    let seq = 0
    const clientId = req.id
    return this.serveInfer(identity, req, {
      // Only streams have an id a `cancel` can name.
      runningKey: clientId ? `${ctx.remotePublicKey.toString('hex')}/${clientId}` : null,
      onText: req.stream
        ? (text, index) =>
            ctx.emit(
              STREAM_CHUNK,
              index === undefined
                ? { id: clientId, seq: seq++, text }
                : { id: clientId, seq: seq++, text, index },
            )
        : null,
      onDelta: req.stream
        ? (delta) => ctx.emit(STREAM_CHUNK, { id: clientId, seq: seq++, text: '', ...delta })
        : undefined,
      watch: (cancel) => ctx.onClose(() => cancel.abort()),
      ...this.observability.rpcSink(ctx),
      trace: this.tracer?.fromPayload(req),
    })
  }

  /**
   * Serves one validated inference request for a caller (RPC or HTTP): authorizes the model,
   * admits it against the limits, forwards it, and writes its usage record (durable) before it
   * returns, its tokens counted in the metrics. `identity` null: accounts are off.
   * @throws ERR_FORBIDDEN (model not allowed for the key), ERR_RATE_LIMITED, ERR_QUOTA_EXCEEDED,
   *         and whatever forwarding throws
   */
  serveInfer(identity: Identity | null, req: InferRequest, sink: Sink): Promise<InferResult> {
    if (!sink.trace) return this.serveOnce(identity, req, sink)
    startTrace(sink.trace, req)
    return endTrace(sink.trace, req, this.serveOnce(identity, req, sink))
  }

  /** One admission, one usage record and one count in the metrics, whatever its `n`. */
  private async serveOnce(identity: Identity | null, req: InferRequest, sink: Sink): Promise<InferResult> {
    await this.admissible(identity, req.model)
    // A request that fails is billed what ran all the same: what processors stopped by its
    // deadline, or by another of its choices failing, had generated.
    const spent = { promptTokens: 0, completionTokens: 0 }
    const work = () => this.pipeline.run(req, sink, identity?.userId ?? '', spent)
    const ledgerId = ledgerIdOf(sink.trace)
    const answer = identity ? this.metering.run(identity, req.model, work, (r) => r, ledgerId, spent) : work()
    return this.observability.counted(req.model, answer, spent)
  }

  /**
   * Refuses, before a request is admitted or recorded, a model the caller's key
   * may not use, and one that no processor serves or ever served.
   * @throws ERR_FORBIDDEN, ERR_MODEL_NOT_FOUND
   */
  private admissible(identity: Identity | null, model: string): Promise<void> {
    requireUsable(identity, model)
    return this.router.requireModel(model)
  }

  /**
   * Embeddings through processors that serve the model, accounted like any
   * request (prompt tokens, one record). A long list of inputs goes in batches
   * (`routing.embedBatchInputs`, `embedBatchBytes`), one after another, each
   * taking a slot through the router's fair queue: another user's request runs
   * between two batches instead of waiting for the whole list. A batch that
   * fails is retried on another processor; a cancel or the deadline stops the
   * batches not yet sent.
   * @throws as `serveInfer`
   */
  async serveEmbed(
    identity: Identity | null,
    req: EmbedRequest,
    watch: Sink['watch'],
    onAnswer?: Sink['onAnswer'],
  ): Promise<EmbedReply> {
    await this.admissible(identity, req.model)
    const cancel = new CancelToken()
    const work = () =>
      withDeadline(cancel, this.config.inferenceTimeoutMs, watch, onAnswer, () =>
        this.embeds.run(req, identity?.userId ?? '', cancel),
      )
    const answer = identity ? this.metering.run(identity, req.model, work, (r) => r) : work()
    return this.observability.counted(req.model, answer)
  }

  protected override abortInflight(): void {
    this.pipeline.abortAll()
  }
}
