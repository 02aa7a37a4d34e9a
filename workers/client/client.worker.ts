/**
 * MeshClient, the library class programs use (`import { MeshClient } from 'llm-mesh'`) and
 * `llm-mesh chat` runs on: what each call sends, and the types of its options and answers.
 * How it reaches a gateway and fails over is gateway-link.ts; its API key or login session
 * is credentials.ts; a streamed answer is mesh-stream.ts.
 */
import type { PeerConnection } from '../../facilities/net/peer-connection.js'
import { deltaOf } from '../../facilities/net/streaming.js'
import type {
  LimitState,
  PublicKey,
  PublicUser,
  TokenPair,
  UsageCounter,
  UsageRecord,
  UsageRow,
} from '../../kernel/accounts.js'
import type { AuditPage, AuditQuery } from '../../kernel/audit.js'
import { type ClientConfig, type ConfigInput, clientConfigSchema, parseConfig } from '../../kernel/config.js'
import { MeshError } from '../../kernel/errors.js'
import type { InferRequestInput, InferResult } from '../../kernel/inference.js'
import type { InviteRole, PublicInvite } from '../../kernel/invite.js'
import type {
  ChatRequest,
  GenerateRequest,
  Health,
  ModelDetails,
  ModelInfo,
  ProcessorView,
} from '../../kernel/wire.js'
import { type BaseStatus, BaseWorker, type WorkerOptions } from '../base.worker.js'
import type { DesiredReply } from '../gateway/model-desired.js'
import type { ModelInventoryReply } from '../gateway/model-inventory.js'
import type { ModelOpName, ModelOpReply } from '../gateway/model-ops.js'
import type { DrainReply } from '../gateway/processor-drain.js'
import { Credentials } from './credentials.js'
import { GatewayLink } from './gateway-link.js'
import { MeshStream } from './mesh-stream.js'
import { type ModelPullRequest, type ModelPullRun, pullThrough } from './model-pull.js'

export interface GatewayStatus extends BaseStatus {
  processors: ProcessorView[]
  /** Requests being forwarded, and waiting for a free processor slot. */
  active: number
  queued: number
  strategy: string
  /** Ready (its store open, a processor serving) and the checks behind it. */
  health?: Health
}

export interface MeshClientOptions extends WorkerOptions {
  /** Config fields (bootstrap is required: a host:port list, or 'public'). */
  config?: ConfigInput
  /** An API key sent with every request; or call `login()`. */
  apiKey?: string
}

export interface UsageQuery {
  /** Another user's usage (admins only). */
  user?: string
  /** YYYY-MM-DD, UTC; default: the first of this month. */
  from?: string
  /** YYYY-MM-DD, UTC; default: today. */
  to?: string
  model?: string
  /** Include the individual request records. */
  records?: boolean
  limit?: number
}

export interface UsageReport {
  user: string
  from: string
  to: string
  rows: UsageRow[]
  total: UsageCounter
  today: UsageCounter
  month: UsageCounter
  limits: Record<string, LimitState>
  records?: UsageRecord[]
}

export interface WhoAmI {
  user: PublicUser
  via: 'apiKey' | 'token'
  keyId: string | null
  models: string[] | null
  limits: Record<string, LimitState>
}

export interface CreateKeyOptions {
  name: string
  /** Create it for another user (admins only). */
  user?: string
  expiresInDays?: number
  models?: string[]
  limits?: { rpm?: number | null; tpm?: number | null }
}

export interface UserLimitOverrides {
  rpm?: number | null
  tpm?: number | null
  dailyTokens?: number | null
  monthlyTokens?: number | null
}

/**
 * Per request: give up after `timeoutMs` (the gateway's `inferenceTimeoutMs` at most); the
 * request's id in the mesh's logs (`requestId`: printable ASCII, at most 128 characters; else
 * ERR_BAD_REQUEST), or the trace id of a W3C `traceparent`, instead of one the gateway makes.
 * The answer carries the id in use (`requestId`) and the per-hop timing (`timing`); an error
 * the gateway sends carries it in `details.requestId`.
 */
export interface RequestOptions {
  timeoutMs?: number
  requestId?: string
  traceparent?: string
}

type Streamed<R> = R & RequestOptions & { stream: true }
type NotStreamed<R> = R & RequestOptions & { stream?: false }

/**
 * Joins the swarm as a client: finds a gateway, then chats, generates and
 * lists models over RPC. This is what `llm-mesh chat` and programs use:
 * `import { MeshClient } from 'llm-mesh'`.
 */
export class MeshClient extends BaseWorker<ClientConfig> {
  private readonly link = new GatewayLink(this)
  private readonly credentials: Credentials

  constructor(opts: MeshClientOptions = {}) {
    const config = parseConfig(clientConfigSchema, opts.config ?? {})
    super('client', config, opts)
    this.credentials = new Credentials(
      opts.apiKey ?? null,
      (refreshToken) => this.invoke<TokenPair>('refresh', { refreshToken }, undefined, false),
      () => this.link.lastKeyHex,
    )
  }

  /** Uses an API key for every later request (ends any login session). */
  useApiKey(key: string): void {
    this.credentials.useApiKey(key)
  }

  /** The logged-in user, if `login()` was used. */
  get user(): PublicUser | null {
    return this.credentials.user
  }

  /**
   * Logs in; later requests carry the access token, refreshed before it expires. The session
   * belongs to the gateway that answered: after a failover to another one, calls fail with
   * ERR_AUTH_REQUIRED until `login()` is called again (an API key is simply sent again).
   * @throws ERR_AUTH_INVALID, ERR_RATE_LIMITED
   */
  async login(username: string, password: string): Promise<PublicUser> {
    const { value: pair, gateway } = await this.invoke<TokenPair>(
      'login',
      { username, password },
      undefined,
      false,
    )
    this.credentials.signIn(pair, gateway)
    return pair.user
  }

  /** Ends the session on the gateway (access and refresh token). */
  async logout(): Promise<void> {
    await this.credentials.signOut((refreshToken) => this.call('logout', { refreshToken }))
  }

  /** Creates an account (open registration, or as an admin). */
  async register(username: string, password: string): Promise<PublicUser> {
    return this.call<PublicUser>('register', { username, password }, undefined, this.credentials.present)
  }

  protected override get serves(): boolean {
    return false
  }

  /** The gateway in use, found on the DHT (or the configured key) on first need. */
  async connectGateway(): Promise<PeerConnection> {
    return this.link.connect()
  }

  /**
   * A request to the gateway, carrying the credential unless `authenticated` is false. When
   * the gateway goes away under it, a method that changes nothing, or a request that never
   * left (the connection was not open), is sent again to whichever gateway answers within
   * `reconnect.timeoutMs`.
   * @throws the gateway's MeshError codes; ERR_UNAVAILABLE when no gateway answers in time
   */
  async call<T>(method: string, payload: unknown = null, timeout?: number, authenticated = true): Promise<T> {
    return (await this.invoke<T>(method, payload, timeout, authenticated)).value
  }

  /** `call`, and the gateway that answered. */
  private invoke<T>(
    method: string,
    payload: unknown,
    timeout: number | undefined,
    authenticated: boolean,
  ): Promise<{ value: T; gateway: PeerConnection }> {
    const opts = timeout === undefined ? {} : { timeout }
    return this.link.run(method, (gw) =>
      authenticated
        ? this.credentials.send(gw, payload, (body) => gw.request<T>(method, body, opts))
        : gw.request<T>(method, payload, opts),
    )
  }

  /** Chat completion. With `stream: true` returns a MeshStream of text pieces. */
  chat(req: Streamed<ChatRequest>): MeshStream
  chat(req: NotStreamed<ChatRequest>): Promise<InferResult>
  chat(req: ChatRequest & RequestOptions & { stream?: boolean }): MeshStream | Promise<InferResult> {
    const payload: InferRequestInput = { kind: 'chat', ...req, stream: req.stream === true }
    return req.stream ? this.stream(payload) : this.unary(payload)
  }

  /** Text completion. With `stream: true` returns a MeshStream of text pieces. */
  generate(req: Streamed<GenerateRequest>): MeshStream
  generate(req: NotStreamed<GenerateRequest>): Promise<InferResult>
  generate(req: GenerateRequest & RequestOptions & { stream?: boolean }): MeshStream | Promise<InferResult> {
    const payload: InferRequestInput = { kind: 'generate', ...req, stream: req.stream === true }
    return req.stream ? this.stream(payload) : this.unary(payload)
  }

  private async unary(payload: InferRequestInput): Promise<InferResult> {
    return this.call<InferResult>('infer', payload, this.rpcTimeout(payload))
  }

  /** The RPC wait: the request's own timeout (plus a margin for the gateway's answer), or the config's. */
  private rpcTimeout(payload: InferRequestInput): number {
    return payload.timeoutMs ? payload.timeoutMs + 5_000 : this.config.inferenceTimeoutMs
  }

  /**
   * A streamed inference. Sent again only if it never left (the connection was not open);
   * when the gateway goes away after chunks came, it fails with ERR_STREAM_BROKEN.
   */
  private stream(payload: InferRequestInput): MeshStream {
    return new MeshStream(async (cancel, onText) => {
      let chunks = 0
      const send = (gw: PeerConnection) =>
        this.credentials.send(gw, payload, (body) =>
          gw.stream<InferResult>('infer', body, {
            cancel,
            timeout: this.rpcTimeout(payload),
            onChunk: (chunk) => {
              chunks++
              onText(chunk.text, deltaOf(chunk))
            },
          }),
        )
      const { value } = await this.link.run('infer', send, {
        onLost: (err) => {
          if (chunks === 0) return
          throw new MeshError(
            'ERR_STREAM_BROKEN',
            `the gateway went away after ${chunks} chunks: ${MeshError.from(err).reason}`,
            { chunks },
            err,
          )
        },
        stopped: () => cancel.aborted,
      })
      return value
    })
  }

  /** Pulls a model onto processors (admins): progress to iterate, `result` per processor (model-pull.ts). */
  pullModel(req: ModelPullRequest): ModelPullRun {
    return pullThrough(this.link, this.credentials, req)
  }

  async models(): Promise<ModelInfo[]> {
    return (await this.call<{ models: ModelInfo[] }>('models')).models
  }

  async show(model: string): Promise<ModelDetails> {
    return this.call<ModelDetails>('show', { model })
  }

  /** The gateway's status: its processors, their models and load. */
  async status(): Promise<GatewayStatus> {
    return this.call<GatewayStatus>('status')
  }

  /** The gateway's health: alive, ready, and the checks behind it (no credential needed). */
  async gatewayHealth(): Promise<Health> {
    return this.call<Health>('health', null, undefined, false)
  }

  /**
   * Drains a processor for maintenance (admins only): it finishes what it runs and is sent
   * nothing new until `undrain` (`draining: false`). `processor`: its key in hex, or a prefix.
   */
  async drainProcessor(processor: string, draining = true): Promise<DrainReply> {
    return this.call<DrainReply>('processorDrain', { processor, draining })
  }

  /**
   * The mesh's models and who holds them: admins see each holder (processor, size, digest,
   * quantization, loaded state); users see the models they may use and how many hold them.
   */
  async modelInventory(): Promise<ModelInventoryReply> {
    return this.call<ModelInventoryReply>('modelInventory')
  }

  /**
   * Changes a model on processors (admins only): `remove` (needs `processors` or `all`), `copy`
   * (to `destination`), `load` (with `keepAliveMs`, negative: until unloaded), `unload`. On the
   * `processors` named (keys or prefixes), else on every holder; the reply has each outcome.
   */
  async modelOp(
    op: ModelOpName,
    model: string,
    opts: { processors?: string[]; all?: boolean; destination?: string; keepAliveMs?: number } = {},
  ): Promise<ModelOpReply> {
    const method = { remove: 'modelRemove', copy: 'modelCopy', load: 'modelLoad', unload: 'modelUnload' }[op]
    return this.call<ModelOpReply>(method, { model, ...opts })
  }

  /**
   * Sets a model's desired state (admins only): at least `replicas` processors hold it, at least
   * `loaded` have it in memory (replicas omitted: as many as loaded); replicas 0 and no loaded
   * clears it. The gateway copies and loads it to get there (docs/operations.md "Desired state").
   */
  async modelDesired(model: string, want: { replicas?: number; loaded?: number }): Promise<DesiredReply> {
    return this.call<DesiredReply>('modelDesired', { model, ...want })
  }

  /** Who the credential belongs to, and where it stands against its limits. */
  async whoami(): Promise<WhoAmI> {
    return this.call<WhoAmI>('whoami')
  }

  async changePassword(currentPassword: string, newPassword: string): Promise<void> {
    await this.call('changePassword', { currentPassword, newPassword })
  }

  /** A new API key: `key` is shown here once and never again. */
  async createKey(opts: CreateKeyOptions): Promise<PublicKey & { key: string }> {
    return this.call('createKey', opts)
  }

  async listKeys(user?: string): Promise<PublicKey[]> {
    return (await this.call<{ keys: PublicKey[] }>('listKeys', user ? { user } : {})).keys
  }

  async revokeKey(id: string): Promise<PublicKey> {
    return this.call<PublicKey>('revokeKey', { id })
  }

  /**
   * Admins: a new invite; `token` (what `llm-mesh processor --join` takes) is shown this once.
   * `expiresInMs` null: never; `bootstrap`: the DHT nodes the token tells new machines to use.
   */
  async createInvite(
    opts: {
      role?: InviteRole
      expiresInMs?: number | null
      note?: string
      bootstrap?: string[] | 'public'
    } = {},
  ): Promise<PublicInvite & { token: string }> {
    return this.call('createInvite', opts)
  }

  /** Admins: every invite, without secrets, with its members. */
  async listInvites(): Promise<PublicInvite[]> {
    return (await this.call<{ invites: PublicInvite[] }>('listInvites')).invites
  }

  /** Admins: the invite joins nobody more, and its members are refused. */
  async revokeInvite(id: string): Promise<PublicInvite> {
    return this.call<PublicInvite>('revokeInvite', { id })
  }

  /** Admins: the newest audit entries (`limit`, default 100) since a time, of an action, oldest first. */
  async audit(query: AuditQuery = {}): Promise<AuditPage> {
    return this.call<AuditPage>('audit', query)
  }

  /** Usage per day and model, with today's and this month's totals and the limits. */
  async usage(query: UsageQuery = {}): Promise<UsageReport> {
    return this.call<UsageReport>('usage', query)
  }

  /** Admins: every user. */
  async listUsers(): Promise<PublicUser[]> {
    return (await this.call<{ users: PublicUser[] }>('listUsers')).users
  }

  /** Admins: a new user. */
  async createUser(user: {
    username: string
    password: string
    role?: 'admin' | 'user'
    limits?: UserLimitOverrides
  }): Promise<PublicUser> {
    return this.call<PublicUser>('createUser', user)
  }

  /** Admins: role, limit overrides (null: no limit), disable/enable. */
  async updateUser(
    username: string,
    changes: {
      role?: 'admin' | 'user'
      limits?: UserLimitOverrides
      disabled?: boolean
      resetLimits?: boolean
    },
  ): Promise<PublicUser> {
    return this.call<PublicUser>('updateUser', { username, ...changes })
  }
}

export { MeshClient as ClientWorker }
