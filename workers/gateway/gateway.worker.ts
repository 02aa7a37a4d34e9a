import type { KeyPair } from 'hyperdht'
import { AuthFacility, type Identity } from '../../facilities/auth/auth.facility.js'
import { HttpFacility, type RequestTiming } from '../../facilities/http/http.facility.js'
import { LimitsFacility, type Subject } from '../../facilities/limits.facility.js'
import type { CallContext, MethodTable } from '../../facilities/net/rpc-server.js'
import { STREAM_CHUNK, type StreamChunk } from '../../facilities/net/streaming.js'
import {
  type LeaseOutcome,
  type ProcessorEntry,
  RouterFacility,
} from '../../facilities/router/router.facility.js'
import { sumRows, UsageFacility, utcDay, utcMonth } from '../../facilities/usage/usage.facility.js'
import type { Role } from '../../kernel/accounts.js'
import { CancelToken, cancelById, cancelError, noop } from '../../kernel/cancel.js'
import type { GatewayConfig } from '../../kernel/config.js'
import { MeshError } from '../../kernel/errors.js'
import { gatewayKeyPair } from '../../kernel/identity.js'
import {
  baseModel,
  type InferRequest,
  type InferResult,
  parseEmbedRequest,
  parseInferRequest,
  parseModelRequest,
} from '../../kernel/inference.js'
import { idSequence, isRecord } from '../../kernel/util.js'
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
import { BaseWorker, type FacilitySpec, type WorkerOptions } from '../base.worker.js'

/** Waits `ms`, or less if `cancel` fires first. */
function sleep(ms: number, cancel: CancelToken): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms)
    const stop = cancel.onAbort(done)
    function done() {
      clearTimeout(timer)
      stop()
      resolve()
    }
  })
}

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

const MODELS_TIMEOUT_MS = 5_000

/** Failures that say the processor, not the request, is the problem: try another. */
const RETRYABLE = new Set(['ERR_UNAVAILABLE', 'ERR_TIMEOUT', 'ERR_BACKEND_UNAVAILABLE', 'ERR_UNKNOWN_METHOD'])

type Payload = Record<string, unknown>

/** Where a served request's text goes, and how its caller can stop it. */
export interface Sink {
  /** Key under which a `cancel` RPC finds it, or null. */
  runningKey: string | null
  /** Each piece of streamed text, in order; null for a request answered whole. */
  onText: ((text: string) => void) | null
  /** Cancels the request when its caller goes away; returns the function that stops watching. */
  watch: (cancel: CancelToken) => () => void
  /** Called each time the request is handed to a processor. */
  onDispatch?: () => void
  /** Called when a processor's whole answer came back, before it is accounted. */
  onAnswer?: () => void
}

/** An embedding answer as processors give it, with who served it. */
export interface EmbedReply extends EmbedResult {
  processor?: string
}

/** One try of a request on one processor. */
interface Leg {
  cancel: CancelToken
  model: string
  /** Whether it has sent text back (a stream that broke then cannot move elsewhere). */
  answering: boolean
}

/**
 * The reason a leg is stopped for its processor's sake (it restarted, drains, is unreachable
 * or gone): the request tries again without counting that processor as failed for it.
 */
function processorGone(entry: ProcessorEntry, what: string): MeshError {
  return new MeshError('ERR_UNAVAILABLE', `processor ${entry.id.slice(0, 8)} ${what}`, { rerouted: true })
}

/** Every field of either kind of request (a field added to the schema must be forwarded or named here). */
type FieldOf<T> = T extends unknown ? keyof T : never
type ForwardedField = Exclude<FieldOf<InferRequest>, 'id' | 'timeoutMs'>

/**
 * What a processor is sent for `req`: every field but the caller's stream id
 * and deadline, as one literal of one shape for both kinds (fields a kind lacks
 * are undefined, which JSON leaves out). Rest-copying the parsed request made
 * an object several times slower to copy and encode, on every request's path.
 */
function processorRequest(req: InferRequest): Record<ForwardedField, unknown> {
  const chat = req.kind === 'chat'
  return {
    kind: req.kind,
    model: req.model,
    stream: req.stream,
    options: req.options,
    messages: chat ? req.messages : undefined,
    prompt: chat ? undefined : req.prompt,
    system: chat ? undefined : req.system,
    raw: chat ? undefined : req.raw,
  }
}

function asPayload(payload: unknown): Payload {
  return isRecord(payload) ? payload : {}
}

function optionalString(p: Payload, field: string): string | undefined {
  const v = p[field]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'string') throw MeshError.badRequest(`request.${field}: expected string`)
  return v
}

/**
 * The mesh's front door: every request is authenticated (API key or access
 * JWT), admitted against the caller's rate limits and quotas, forwarded to a
 * processor that serves its model (tokens streamed back), and written to the
 * usage ledger before the answer is returned.
 */
export class GatewayWorker extends BaseWorker<GatewayConfig> {
  private routerFacility: RouterFacility | null = null
  private authFacility: AuthFacility | null = null
  private usageFacility: UsageFacility | null = null
  private limitsFacility: LimitsFacility | null = null
  private httpFacility: HttpFacility | null = null
  /** Client streams by `<caller key hex>/<stream id>`, for `cancel`. */
  private readonly running = new Map<string, CancelToken>()
  /** Requests being forwarded (streamed or not). */
  private active = 0
  /** Request ids: random per start, then a counter (unique across restarts, no syscall per request). */
  private readonly nextRequestId = idSequence(6, 6)
  /** Legs running on each processor, failed over when it goes away. */
  private readonly legs = new Map<string, Set<Leg>>()

  constructor(config: GatewayConfig, opts: WorkerOptions = {}) {
    super('gateway', config, opts)
  }

  get router(): RouterFacility {
    if (!this.routerFacility) throw new MeshError('ERR_UNAVAILABLE', 'router is not open')
    return this.routerFacility
  }

  /** Accounts, or null when `auth.enabled` is false. */
  get auth(): AuthFacility | null {
    return this.authFacility
  }

  get usage(): UsageFacility | null {
    return this.usageFacility
  }

  get limits(): LimitsFacility | null {
    return this.limitsFacility
  }

  /** Base URL of the HTTP APIs, or null when they are off. */
  get httpUrl(): string | null {
    return this.httpFacility?.url ?? null
  }

  protected override facilities(): FacilitySpec[] {
    const accounts: FacilitySpec[] = []
    if (this.config.auth.enabled) {
      const needStore = () => {
        try {
          return this.store
        } catch {
          throw MeshError.badConfig(
            'config.store: a gateway with accounts (auth.enabled) needs a store folder',
          )
        }
      }
      accounts.push(
        {
          name: 'auth',
          priority: 40,
          create: () => {
            this.authFacility = new AuthFacility({
              store: needStore(),
              config: this.config.auth,
              logger: this.log,
            })
            return this.authFacility
          },
        },
        {
          name: 'usage',
          priority: 42,
          create: () => {
            this.usageFacility = new UsageFacility({
              store: needStore(),
              logger: this.log,
              maxBatch: this.config.ledger.maxBatch,
            })
            return this.usageFacility
          },
        },
        {
          name: 'limits',
          priority: 44,
          create: () => {
            const usage = this.usageFacility as UsageFacility
            this.limitsFacility = new LimitsFacility({ tokensUsed: (id, now) => usage.tokensUsed(id, now) })
            return this.limitsFacility
          },
        },
      )
    }
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
                authenticate: (token) => (this.authFacility ? this.authFacility.authenticate(token) : null),
                sourceFor: (identity, timing) => new GatewaySource(this, identity, timing),
              })
              return this.httpFacility
            },
          },
        ]
      : []
    return [
      ...accounts,
      ...http,
      {
        name: 'router',
        priority: 50,
        create: () => {
          this.routerFacility = new RouterFacility({
            net: this.net,
            config: this.config.registry,
            routing: this.config.routing,
            logger: this.log,
          })
          const events = this.routerFacility.events
          events.on('drop', (entry: ProcessorEntry) => this.failOver(entry, 'is gone'))
          events.on('restarted', (entry: ProcessorEntry) => this.failOver(entry, 'restarted'))
          events.on('unreachable', (entry: ProcessorEntry) => this.moveWaiting(entry))
          return this.routerFacility
        },
      },
    ]
  }

  protected override fixedIdentity(): KeyPair | null {
    const { meshSecret, mesh, gatewayIndex } = this.config
    return meshSecret ? gatewayKeyPair(meshSecret, mesh, gatewayIndex) : null
  }

  protected override async afterStart(): Promise<void> {
    if (!this.config.auth.enabled) {
      this.log.warn(
        'auth is disabled: anyone who reaches this gateway can use the mesh, unlimited and unaccounted',
      )
    }
  }

  protected override methods(): MethodTable {
    return {
      // Open: how a caller gets a credential.
      login: (payload, ctx) => {
        const p = asPayload(payload)
        return this.accounts().login(p.username, p.password, ctx.remotePublicKey.toString('hex'))
      },
      refresh: (payload) => this.accounts().refresh(asPayload(payload).refreshToken),
      register: (payload) => this.register(asPayload(payload)),
      // Any user.
      logout: async (payload) => {
        const p = asPayload(payload)
        await this.accounts().logout(this.requireIdentity(p), p.refreshToken)
        return { ok: true }
      },
      whoami: (payload) => this.whoami(this.requireIdentity(payload)),
      changePassword: async (payload, ctx) => {
        const p = asPayload(payload)
        const id = this.requireIdentity(p)
        const source = ctx.remotePublicKey.toString('hex')
        await this.accounts().changePassword(id, p.currentPassword, p.newPassword, source)
        return { ok: true }
      },
      createKey: (payload) => this.createKey(asPayload(payload)),
      listKeys: (payload) => {
        const p = asPayload(payload)
        const target = this.targetUser(this.requireIdentity(p), optionalString(p, 'user'))
        return { keys: this.accounts().listKeys(target.id) }
      },
      revokeKey: (payload) => {
        const p = asPayload(payload)
        const id = this.requireKeyManager(p)
        return this.accounts().revokeKey(p.id, id.userId, id.role === 'admin')
      },
      usage: (payload) => this.usageReport(asPayload(payload)),
      infer: (payload, ctx) => this.infer(payload, ctx),
      // A caller that goes away stops waiting for a slot.
      embed: (payload, ctx) =>
        this.serveEmbed(
          this.identify(payload),
          parseEmbedRequest(payload, this.config.maxPromptBytes),
          (cancel) => ctx.onClose(() => cancel.abort()),
        ),
      ps: async (payload) => {
        this.identify(payload)
        return { models: await this.runningModels() }
      },
      cancel: (payload, ctx) => cancelById(this.running, payload, ctx.remotePublicKey),
      models: async (payload) => {
        this.identify(payload)
        return { models: await this.models() }
      },
      show: (payload) => {
        this.identify(payload)
        return this.show(parseModelRequest(payload).model)
      },
      status: (payload) => {
        this.identify(payload)
        return this.localStatus()
      },
      // Admins.
      listUsers: (payload) => {
        this.requireAdmin(payload)
        return { users: this.accounts().listUsers() }
      },
      createUser: (payload) => {
        const p = asPayload(payload)
        this.requireAdmin(p)
        return this.accounts().createUser({
          username: p.username,
          password: p.password,
          role: this.roleOf(p.role),
          limits: p.limits,
        })
      },
      updateUser: async (payload) => {
        const p = asPayload(payload)
        this.requireAdmin(p)
        const username = optionalString(p, 'username')
        if (!username) throw MeshError.badRequest('request.username: required')
        if (p.disabled !== undefined && typeof p.disabled !== 'boolean')
          throw MeshError.badRequest('request.disabled: expected boolean')
        if (p.password !== undefined) await this.accounts().setPassword(username, p.password)
        return this.accounts().updateUser(username, {
          ...(p.role !== undefined ? { role: this.roleOf(p.role) } : {}),
          ...(p.limits !== undefined ? { limits: p.limits } : {}),
          ...(p.disabled !== undefined ? { disabled: p.disabled as boolean } : {}),
          ...(p.resetLimits === true ? { resetLimits: true } : {}),
        })
      },
    }
  }

  // ---------------------------------------------------------------- identity

  private accounts(): AuthFacility {
    if (!this.authFacility) throw new MeshError('ERR_UNAVAILABLE', 'accounts are disabled on this gateway')
    return this.authFacility
  }

  /** The caller's identity from `payload.auth`, or null when auth is disabled. @throws ERR_AUTH_* */
  private identify(payload: unknown): Identity | null {
    if (!this.authFacility) return null
    return this.authFacility.authenticate(asPayload(payload).auth)
  }

  private requireIdentity(payload: unknown): Identity {
    return this.accounts().authenticate(asPayload(payload).auth)
  }

  private requireAdmin(payload: unknown): Identity {
    const id = this.requireIdentity(payload)
    if (id.role !== 'admin') throw new MeshError('ERR_FORBIDDEN', 'admins only')
    return id
  }

  private roleOf(v: unknown): Role {
    if (v === undefined || v === 'user') return 'user'
    if (v === 'admin') return 'admin'
    throw MeshError.badRequest("request.role: 'admin' or 'user'")
  }

  /** The user a request is about: the caller, or (admins only) the one named. */
  private targetUser(caller: Identity, username: string | undefined) {
    const auth = this.accounts()
    if (username !== undefined && username.toLowerCase() !== caller.username) {
      if (caller.role !== 'admin')
        throw new MeshError('ERR_FORBIDDEN', "only admins may act on another user's account")
      const u = auth.user(username)
      if (!u) throw new MeshError('ERR_NOT_FOUND', `no user '${username}'`, { username })
      return u
    }
    const u = auth.userById(caller.userId)
    if (!u) throw new MeshError('ERR_AUTH_INVALID', 'user is gone')
    return u
  }

  private subjectOf(identity: Identity): Subject {
    const auth = this.accounts()
    const u = auth.userById(identity.userId)
    const k = identity.keyId ? auth.key(identity.keyId) : undefined
    return {
      userId: identity.userId,
      username: identity.username,
      keyId: identity.keyId,
      userLimits: { ...this.config.limits.user, ...u?.limits },
      keyLimits: k ? { ...this.config.limits.key, ...k.limits } : null,
    }
  }

  private async register(p: Payload) {
    const auth = this.accounts()
    if (this.config.auth.registration !== 'open') {
      const caller = p.auth === undefined ? null : this.requireIdentity(p)
      if (caller?.role !== 'admin') {
        throw new MeshError(
          'ERR_FORBIDDEN',
          'registration is closed on this gateway: ask an admin for an account',
        )
      }
    }
    return auth.createUser({ username: p.username, password: p.password, role: 'user' })
  }

  private whoami(identity: Identity) {
    const u = this.accounts().userById(identity.userId)
    if (!u) throw new MeshError('ERR_AUTH_INVALID', 'user is gone')
    return {
      user: AuthFacility.publicUser(u),
      via: identity.keyId ? 'apiKey' : 'token',
      keyId: identity.keyId,
      models: identity.models,
      limits: (this.limitsFacility as LimitsFacility).state(this.subjectOf(identity)),
    }
  }

  /**
   * Key management from an API key that is itself restricted (model list or
   * own limits) would let it mint a key without those restrictions: refused.
   * @throws ERR_FORBIDDEN
   */
  private requireKeyManager(payload: unknown): Identity {
    const caller = this.requireIdentity(payload)
    if (caller.role === 'admin' || !caller.keyId) return caller
    const key = this.accounts().key(caller.keyId)
    const restricted = caller.models !== null || Object.values(key?.limits ?? {}).some((v) => v !== undefined)
    if (restricted) {
      throw new MeshError(
        'ERR_FORBIDDEN',
        'a restricted API key cannot manage keys: log in, or use an unrestricted key',
      )
    }
    return caller
  }

  private async createKey(p: Payload) {
    const caller = this.requireKeyManager(p)
    const target = this.targetUser(caller, optionalString(p, 'user'))
    return this.accounts().createKey(
      target.id,
      { name: p.name, expiresInDays: p.expiresInDays, models: p.models, limits: p.limits },
      caller,
    )
  }

  /** Usage per day and model over a range (default: this month), with today's and this month's totals. */
  private async usageReport(p: Payload) {
    const caller = this.requireIdentity(p)
    const target = this.targetUser(caller, optionalString(p, 'user'))
    const usage = this.usageFacility as UsageFacility
    const now = Date.now()
    const today = utcDay(now)
    const monthStart = `${utcMonth(now)}-01`
    const from = optionalString(p, 'from') ?? monthStart
    const to = optionalString(p, 'to') ?? today
    const model = optionalString(p, 'model')
    const range = await usage.summary(target.id, from, to, model)
    const month =
      from === monthStart && to === today && !model
        ? range
        : await usage.summary(target.id, monthStart, today)
    const report: Record<string, unknown> = {
      user: target.username,
      from,
      to,
      rows: range.rows,
      total: range.total,
      today: sumRows(month.rows, (r) => r.day === today),
      month: month.total,
    }
    if (p.records === true) {
      const limit = typeof p.limit === 'number' && p.limit > 0 ? Math.min(p.limit, 10_000) : 1000
      report.records = await usage.records(
        target.id,
        Date.parse(`${from}T00:00:00Z`),
        Date.parse(`${to}T23:59:59.999Z`),
        limit,
      )
    }
    await usage.loadTotals(target.id, now)
    report.limits = (this.limitsFacility as LimitsFacility).state(
      this.subjectOf({
        userId: target.id,
        username: target.username,
        role: target.role,
        keyId: null,
        models: null,
        jti: null,
        expiresAt: null,
      }),
      now,
    )
    return report
  }

  protected override async statusInfo(): Promise<Record<string, unknown>> {
    return {
      processors: this.router.list(),
      active: this.active,
      queued: this.router.queued,
      strategy: this.router.strategy,
    }
  }

  /** Stops every leg on a processor that is gone or restarted: they cannot finish there. */
  private failOver(entry: ProcessorEntry, what: string): void {
    const legs = this.legs.get(entry.id)
    if (!legs) return
    const reason = processorGone(entry, what)
    for (const leg of legs) leg.cancel.abort(reason)
  }

  /**
   * A processor stopped answering: legs still waiting for their first text move to another
   * processor that serves their model, if there is one. The rest keep running (a busy
   * processor answers late; a dead one is dropped after `goneAfterMs`).
   */
  private moveWaiting(entry: ProcessorEntry): void {
    const legs = this.legs.get(entry.id)
    if (!legs) return
    const reason = processorGone(entry, 'stopped answering')
    for (const leg of legs) {
      if (!leg.answering && this.router.hasOtherFor(leg.model, entry.id)) leg.cancel.abort(reason)
    }
  }

  /** Asks every live processor `method`; one that fails is logged and left out. */
  private async askAll<T>(method: string): Promise<T[]> {
    const replies = await Promise.all(
      this.router.live().map(async (entry) => {
        try {
          return await this.net.peer(entry.publicKey).request<T>(method, null, { timeout: MODELS_TIMEOUT_MS })
        } catch (err) {
          this.log.warn({ err, processor: entry.id }, `${method} failed`)
          return null
        }
      }),
    )
    return replies.filter((r): r is Awaited<T> => r !== null)
  }

  /** Union of the models of live processors. */
  async models(): Promise<ModelInfo[]> {
    const byName = new Map<string, ModelInfo>()
    for (const reply of await this.askAll<{ models?: ModelInfo[] }>('models')) {
      for (const m of reply.models ?? []) if (!byName.has(m.name)) byName.set(m.name, m)
    }
    return [...byName.values()].sort((a, b) => a.name.localeCompare(b.name))
  }

  /** Model details from a processor that serves it (any one: they read the same file). */
  async show(model: string): Promise<ModelDetails> {
    let serving = this.router.entriesFor(model)
    if (serving.length === 0) {
      await this.router.refresh()
      serving = this.router.entriesFor(model)
    }
    const answering = serving.filter((e) => e.state !== 'unreachable')
    const entry = answering.find((e) => e.breaker !== 'open') ?? answering[0]
    if (!entry) throw MeshError.modelNotFound(model)
    return this.net
      .peer(entry.publicKey)
      .request<ModelDetails>('show', { model }, { timeout: MODELS_TIMEOUT_MS })
  }

  /**
   * Authenticates, admits, forwards and accounts one inference request. The
   * answer is returned only once its usage record is durable.
   * @throws ERR_AUTH_*, ERR_FORBIDDEN (model not allowed for the key), ERR_RATE_LIMITED,
   *         ERR_QUOTA_EXCEEDED, and whatever forwarding throws
   */
  private async infer(payload: unknown, ctx: CallContext): Promise<InferResult> {
    const identity = this.identify(payload)
    const req = parseInferRequest(payload, this.config.maxPromptBytes)
    if (req.stream && !req.id) throw MeshError.badRequest('request.id: required when stream is true')
    let seq = 0
    const clientId = req.id
    return this.serveInfer(identity, req, {
      // Only streams have an id a `cancel` can name.
      runningKey: clientId ? `${ctx.remotePublicKey.toString('hex')}/${clientId}` : null,
      onText: req.stream ? (text) => ctx.emit(STREAM_CHUNK, { id: clientId, seq: seq++, text }) : null,
      watch: (cancel) => ctx.onClose(() => cancel.abort()),
    })
  }

  /**
   * Serves one validated inference request for a caller (RPC or HTTP):
   * authorizes the model, admits it against the limits, forwards it, and writes
   * its usage record (durable) before it returns. `identity` null: accounts
   * are off.
   * @throws ERR_FORBIDDEN (model not allowed for the key), ERR_RATE_LIMITED, ERR_QUOTA_EXCEEDED,
   *         and whatever forwarding throws
   */
  async serveInfer(identity: Identity | null, req: InferRequest, sink: Sink): Promise<InferResult> {
    const checking = this.admissible(identity, req.model)
    if (checking) await checking
    const work = () => this.run(req, sink, identity?.userId ?? '')
    if (!identity) return work()
    return this.accounted(identity, req.model, work, (r) => r)
  }

  /**
   * Refuses, before a request is admitted or recorded, a model the caller's key
   * may not use, and one that no processor serves or ever served. Returns a
   * promise only when it has to look processors up (`checkModel`): every
   * request passes here.
   * @throws ERR_FORBIDDEN, ERR_MODEL_NOT_FOUND
   */
  private admissible(identity: Identity | null, model: string): Promise<void> | undefined {
    if (identity?.models && !identity.models.some((m) => baseModel(m) === baseModel(model))) {
      throw new MeshError('ERR_FORBIDDEN', `this API key may not use model '${model}'`, { model })
    }
    return this.router.checkModel(model)
  }

  /**
   * The accounting frame of every served request: admission against the
   * limits, the work, token counting and the usage record.
   */
  private async accounted<T extends { promptTokens: number; completionTokens?: number }>(
    identity: Identity,
    model: string,
    work: () => Promise<T>,
    counts: (result: T) => { processor?: string | undefined; doneReason?: string | undefined },
  ): Promise<T & { requestId: string }> {
    const usage = this.usageFacility as UsageFacility
    const limits = this.limitsFacility as LimitsFacility
    const subject = this.subjectOf(identity)
    if (!usage.hasTotals(identity.userId)) await usage.loadTotals(identity.userId)
    limits.admit(subject)
    const started = performance.now()
    const requestId = this.nextRequestId()
    let result: T | null = null
    let failure: MeshError | null = null
    try {
      result = await work()
    } catch (err) {
      failure = MeshError.from(err)
    }
    const promptTokens = result?.promptTokens ?? 0
    const completionTokens = result?.completionTokens ?? 0
    const meta = result ? counts(result) : {}
    limits.addTokens(subject, promptTokens + completionTokens)
    await usage.record({
      id: requestId,
      ts: Date.now(),
      userId: identity.userId,
      keyId: identity.keyId,
      model,
      processor: meta.processor ?? null,
      promptTokens,
      completionTokens,
      ms: Math.round((performance.now() - started) * 1000) / 1000,
      status: failure
        ? failure.code === 'ERR_CANCELLED'
          ? 'cancelled'
          : 'error'
        : meta.doneReason === 'cancelled'
          ? 'cancelled'
          : 'ok',
      ...(failure ? { code: failure.code } : {}),
    })
    if (failure) throw failure
    return Object.assign(result as T, { requestId })
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
    const checking = this.admissible(identity, req.model)
    if (checking) await checking
    const cancel = new CancelToken()
    const work = () =>
      this.withDeadline(cancel, this.config.inferenceTimeoutMs, watch, onAnswer, () =>
        this.embedBatches(req, identity?.userId ?? '', cancel),
      )
    if (!identity) return work()
    return this.accounted(identity, req.model, work, (r) => ({ processor: r.processor }))
  }

  /**
   * Runs `work` while `cancel` aborts when its caller stops (`watch`) or after
   * `timeoutMs` (ERR_TIMEOUT), and stops watching and timing when it ends;
   * tells `onAnswer` when it succeeded.
   */
  private async withDeadline<T>(
    cancel: CancelToken,
    timeoutMs: number,
    watch: Sink['watch'],
    onAnswer: Sink['onAnswer'],
    work: () => Promise<T>,
  ): Promise<T> {
    const unwatch = watch(cancel)
    const deadline = setTimeout(
      () => cancel.abort(MeshError.timeout(`no answer within ${timeoutMs} ms`)),
      timeoutMs,
    )
    try {
      const result = await work()
      onAnswer?.()
      return result
    } finally {
      clearTimeout(deadline)
      unwatch()
    }
  }

  /**
   * `req` batch by batch, the vectors joined in order and the prompt tokens summed; the
   * processor named is the first batch's. A list that fits one batch is sent as it is.
   * @throws ERR_INTERNAL when a processor answers a batch with a different number of vectors
   */
  private async embedBatches(req: EmbedRequest, userId: string, cancel: CancelToken): Promise<EmbedReply> {
    const { embedBatchInputs, embedBatchBytes } = this.config.routing
    const { input } = req
    let end = GatewayWorker.batchEnd(input, 0, embedBatchInputs, embedBatchBytes)
    if (end >= input.length) return this.embedAttempts(req, userId, cancel)
    const started = performance.now()
    const embeddings: number[][] = []
    let promptTokens = 0
    let loadMs = 0
    let processor: string | undefined
    for (let start = 0; start < input.length; ) {
      const batch = input.slice(start, end)
      const r = await this.embedAttempts({ ...req, input: batch }, userId, cancel)
      if (r.embeddings.length !== batch.length) {
        throw new MeshError(
          'ERR_INTERNAL',
          `processor ${r.processor?.slice(0, 8)} answered ${batch.length} inputs with ${r.embeddings.length} vectors`,
        )
      }
      for (const v of r.embeddings) embeddings.push(v)
      promptTokens += r.promptTokens
      loadMs += r.loadMs
      processor ??= r.processor
      start = end
      end = GatewayWorker.batchEnd(input, start, embedBatchInputs, embedBatchBytes)
    }
    return { embeddings, promptTokens, totalMs: performance.now() - started, loadMs, processor }
  }

  /** Where the batch from `start` ends: at most `maxInputs` inputs and `maxBytes` bytes, but one input at least. */
  private static batchEnd(
    input: readonly string[],
    start: number,
    maxInputs: number,
    maxBytes: number,
  ): number {
    let end = start
    let bytes = 0
    while (end < input.length && end - start < maxInputs) {
      bytes += Buffer.byteLength(input[end] as string)
      if (bytes > maxBytes && end > start) break
      end++
    }
    return end
  }

  /** One batch, on another processor when one fails (at most `routing.maxAttempts`). */
  private async embedAttempts(req: EmbedRequest, userId: string, cancel: CancelToken): Promise<EmbedReply> {
    const tried = new Set<string>()
    for (let attempt = 1; ; attempt++) {
      const lease = await this.router.acquire(req.model, { userId, exclude: tried, cancel })
      tried.add(lease.entry.id)
      let outcome: LeaseOutcome = { ok: false, processorFault: false }
      try {
        if (cancel.aborted) throw cancelError(cancel.reason)
        const result = await this.net
          .peer(lease.entry.publicKey, lease.entry.id)
          .request<EmbedReply>('embed', req, { timeout: this.config.inferenceTimeoutMs })
        outcome = { ok: true }
        return { ...result, processor: lease.entry.id }
      } catch (err) {
        const e = MeshError.from(err)
        // A processor that refused it while draining did nothing wrong, and gets nothing new.
        const draining = e.details?.draining === true
        if (draining) this.router.markDraining(lease.entry)
        outcome = { ok: false, processorFault: !draining && RETRYABLE.has(e.code) }
        if (!RETRYABLE.has(e.code) || attempt >= this.config.routing.maxAttempts) throw e
      } finally {
        lease.release(outcome)
      }
    }
  }

  /** Models loaded on every processor (Ollama's /api/ps across the mesh). */
  async runningModels(): Promise<RunningModel[]> {
    const replies = await this.askAll<{ models?: RunningModel[] }>('ps')
    return replies.flatMap((r) => r.models ?? []).sort((a, b) => a.name.localeCompare(b.name))
  }

  /** Forwards one validated request (streams tracked for `cancel`, bounded by its timeout). */
  private async run(req: InferRequest, sink: Sink, userId: string): Promise<InferResult> {
    const key = sink.runningKey
    if (key && this.running.has(key))
      throw MeshError.badRequest(`request.id: stream '${req.id}' is already running`)
    const timeoutMs = Math.min(
      req.timeoutMs ?? this.config.inferenceTimeoutMs,
      this.config.inferenceTimeoutMs,
    )
    const cancel = new CancelToken()
    if (key) this.running.set(key, cancel)
    this.active++
    try {
      return await this.withDeadline(cancel, timeoutMs, sink.watch, sink.onAnswer, () =>
        this.forward(req, sink, cancel, userId, timeoutMs),
      )
    } finally {
      this.active--
      if (key) this.running.delete(key)
    }
  }

  private async forward(
    req: InferRequest,
    sink: Sink,
    cancel: CancelToken,
    userId: string,
    timeoutMs: number,
  ): Promise<InferResult> {
    const { routing } = this.config
    const started = Date.now()
    const tried = new Set<string>()
    let chunks = 0
    const body = processorRequest(req)
    const stopped = () => cancelError(cancel.reason)
    for (let attempt = 1; ; attempt++) {
      // As acquire() would: a request stopped meanwhile (its caller gone) takes no slot.
      if (cancel.aborted) throw stopped()
      const lease =
        this.router.leaseNow(req.model, tried, userId) ??
        (await this.router.acquire(req.model, { userId, exclude: tried, cancel }))
      const { entry } = lease
      tried.add(entry.id)
      const leg: Leg = { cancel: new CancelToken(), model: req.model, answering: false }
      const unfollow = cancel.onAbort((reason) => leg.cancel.abort(reason))
      let legs = this.legs.get(entry.id)
      if (!legs) {
        legs = new Set<Leg>()
        this.legs.set(entry.id, legs)
      }
      legs.add(leg)
      const sent = performance.now()
      sink.onDispatch?.()
      let firstChunkMs: number | undefined
      let outcome: LeaseOutcome = { ok: false, processorFault: false }
      try {
        if (cancel.aborted) throw stopped()
        const { onText } = sink
        const result = await this.net.peer(entry.publicKey, entry.id).stream<InferResult>('infer', body, {
          cancel: leg.cancel,
          timeout: timeoutMs,
          // An answer given whole has no chunks to wait for (the processor streams only when asked).
          onChunk: onText
            ? (chunk: StreamChunk) => {
                firstChunkMs ??= performance.now() - sent
                leg.answering = true
                chunks++
                onText(chunk.text)
              }
            : undefined,
        })
        result.processor = entry.id
        const observedMs = performance.now() - sent
        outcome = {
          ok: true,
          // Unary answers have no first chunk: what the processor did not spend generating.
          // Loading the model is a one-time cost, not the processor's speed: a first request
          // that paid it must not brand the processor slow under `fastest`.
          ttftMs: Math.max(0, (firstChunkMs ?? observedMs - (result.evalMs ?? 0)) - (result.loadMs ?? 0)),
          completionTokens: result.completionTokens,
          evalMs: result.evalMs,
        }
        return result
      } catch (err) {
        const e = MeshError.from(err)
        if (cancel.aborted) {
          const reason = cancel.reason instanceof MeshError ? cancel.reason : e
          // The gateway's own deadline (not a shorter one the client chose) ran out before the
          // processor produced anything: the processor hung, and its breaker should know.
          if (reason.code === 'ERR_TIMEOUT' && req.timeoutMs === undefined && chunks === 0) {
            outcome = { ok: false, processorFault: true }
          }
          throw reason
        }
        const retryable = RETRYABLE.has(e.code)
        // Stopping (it refused: draining) or stopped for its processor's sake (restarted, gone,
        // unreachable): not the processor failing, and it may serve this request once back.
        const draining = e.details?.draining === true
        const rerouted = draining || e.details?.rerouted === true
        if (draining) this.router.markDraining(entry)
        outcome = { ok: false, processorFault: !rerouted && (retryable || e.code === 'ERR_INTERNAL') }
        if (!retryable) throw e
        if (chunks > 0) {
          throw new MeshError('ERR_STREAM_BROKEN', `processor failed after ${chunks} chunks: ${e.reason}`, {
            chunks,
          })
        }
        if (rerouted) tried.delete(entry.id)
        else this.log.warn({ err: e, processor: entry.id, attempt }, 'processor failed before first token')
      } finally {
        lease.release(outcome)
        legs.delete(leg)
        if (legs.size === 0) this.legs.delete(entry.id)
        unfollow()
      }
      const backoff = Math.random() * Math.min(routing.retryMaxMs, routing.retryBaseMs * 2 ** (attempt - 1))
      if (attempt >= routing.maxAttempts || Date.now() + backoff - started > routing.retryBudgetMs) {
        throw MeshError.noProcessor(req.model, `${attempt} attempt(s) failed`)
      }
      await sleep(backoff, cancel)
      if (cancel.aborted) throw stopped()
    }
  }

  protected override abortInflight(): void {
    for (const legs of this.legs.values()) for (const leg of legs) leg.cancel.abort()
  }
}

/**
 * The mesh as one HTTP caller sees it: the InferenceSource the Ollama and
 * OpenAI route layers serve, going through the gateway's accounts, limits,
 * routing and ledger exactly as an RPC request does.
 */
class GatewaySource implements InferenceSource {
  constructor(
    private readonly gateway: GatewayWorker,
    private readonly identity: Identity | null,
    private readonly timing: RequestTiming,
  ) {}

  listModels(): Promise<ModelInfo[]> {
    return this.gateway.models()
  }

  showModel(name: string): Promise<ModelDetails> {
    return this.gateway.show(name)
  }

  runningModels(): Promise<RunningModel[]> {
    return this.gateway.runningModels()
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
      parseEmbedRequest(req, this.gateway.config.maxPromptBytes),
      (cancel) => watchCaller(cb, cancel),
      () => {
        this.timing.answered = performance.now()
      },
    )
  }

  private async serve(payload: Record<string, unknown>, cb: GenerateCallbacks): Promise<GenerationResult> {
    const req = parseInferRequest(payload, this.gateway.config.maxPromptBytes)
    return this.gateway.serveInfer(this.identity, req, {
      runningKey: null,
      onText: cb.onToken ?? null,
      watch: (cancel) => watchCaller(cb, cancel),
      onDispatch: () => {
        this.timing.dispatched ??= performance.now()
      },
      // The ledger write after the answer is the gateway's time too.
      onAnswer: () => {
        this.timing.answered = performance.now()
      },
    })
  }
}
