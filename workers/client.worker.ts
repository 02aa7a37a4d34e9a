import type { PublicKey, PublicUser, TokenPair } from '../facilities/auth.facility.js'
import type { LimitState } from '../facilities/limits.facility.js'
import type { PeerConnection } from '../facilities/net.facility.js'
import type { ProcessorView } from '../facilities/router.facility.js'
import type { UsageCounter, UsageRecord, UsageRow } from '../facilities/usage.facility.js'
import type { BaseStatus } from './base.worker.js'
import { BaseWorker, type WorkerOptions } from './base.worker.js'
import { CancelToken } from './lib/cancel.js'
import { type ClientConfig, type ConfigInput, clientConfigSchema, parseConfig } from './lib/config.js'
import { MeshError } from './lib/errors.js'
import type { InferRequestInput, InferResult } from './lib/inference.js'

export interface GatewayStatus extends BaseStatus {
  processors: ProcessorView[]
  /** Requests being forwarded, and waiting for a free processor slot. */
  active: number
  queued: number
  strategy: string
}

import type { ChatRequest, GenerateRequest, ModelDetails, ModelInfo } from './lib/wire.js'

const GATEWAY_PING_TIMEOUT_MS = 3_000
const FIND_GATEWAY_TIMEOUT_MS = 15_000
const FIND_RETRY_MS = 250

/** One piece of a streamed answer; the last one has `done: true` and the final counts. */
export type StreamPart = { done: false; text: string } | { done: true; text: ''; result: InferResult }

/**
 * A streamed answer: iterate it for text pieces; `abort()` stops the
 * generation (on the processor too); `result` settles with the final counts.
 */
export class MeshStream implements AsyncIterable<StreamPart> {
  readonly result: Promise<InferResult>
  private readonly cancel = new CancelToken()
  private readonly queue: StreamPart[] = []
  private error: unknown = null
  private finished = false
  private wake: (() => void) | null = null

  constructor(start: (cancel: CancelToken, onText: (text: string) => void) => Promise<InferResult>) {
    this.result = start(this.cancel, (text) => this.push({ done: false, text }))
    this.result.then(
      (result) => {
        this.push({ done: true, text: '', result })
        this.finished = true
        this.notify()
      },
      (err) => {
        this.error = err
        this.finished = true
        this.notify()
      },
    )
  }

  abort(): void {
    this.cancel.abort()
  }

  get aborted(): boolean {
    return this.cancel.aborted
  }

  private push(part: StreamPart): void {
    this.queue.push(part)
    this.notify()
  }

  private notify(): void {
    const wake = this.wake
    this.wake = null
    wake?.()
  }

  async *[Symbol.asyncIterator](): AsyncIterator<StreamPart> {
    while (true) {
      const part = this.queue.shift()
      if (part) {
        yield part
        if (part.done) return
        continue
      }
      if (this.finished) {
        if (this.error) throw this.error
        return
      }
      await new Promise<void>((resolve) => {
        this.wake = resolve
      })
    }
  }
}

export interface MeshClientOptions extends WorkerOptions {
  /** Config fields (bootstrap is required: a host:port list, or 'public'). */
  config?: ConfigInput
  /** An API key sent with every request; or call `login()`. */
  apiKey?: string
}

/** Refresh the access token when it has less than this left. */
const REFRESH_MARGIN_MS = 30_000

interface Session {
  accessToken: string
  refreshToken: string
  accessExpiresAt: number
  user: PublicUser
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

/** Per request: give up after `timeoutMs` (the gateway's `inferenceTimeoutMs` at most). */
export interface RequestOptions {
  timeoutMs?: number
}

type Streamed<R> = R & RequestOptions & { stream: true }
type NotStreamed<R> = R & RequestOptions & { stream?: false }

/**
 * Joins the swarm as a client: finds a gateway, then chats, generates and
 * lists models over RPC. This is what `llm-mesh chat` and programs use:
 * `import { MeshClient } from 'llm-mesh'`.
 */
export class MeshClient extends BaseWorker<ClientConfig> {
  private gateway: PeerConnection | null = null
  private finding: Promise<PeerConnection> | null = null
  private apiKey: string | null
  private session: Session | null = null
  private refreshing: Promise<void> | null = null

  constructor(opts: MeshClientOptions = {}) {
    const config = parseConfig(clientConfigSchema, opts.config ?? {})
    super('client', config, opts)
    this.apiKey = opts.apiKey ?? null
  }

  /** Uses an API key for every later request (ends any login session). */
  useApiKey(key: string): void {
    this.apiKey = key
    this.session = null
  }

  /** The logged-in user, if `login()` was used. */
  get user(): PublicUser | null {
    return this.session?.user ?? null
  }

  /** Logs in; later requests carry the access token, refreshed before it expires. @throws ERR_AUTH_INVALID, ERR_RATE_LIMITED */
  async login(username: string, password: string): Promise<PublicUser> {
    const pair = await this.call<TokenPair>('login', { username, password }, undefined, false)
    this.adopt(pair)
    this.apiKey = null
    return pair.user
  }

  /** Ends the session on the gateway (access and refresh token). */
  async logout(): Promise<void> {
    const session = this.session
    if (!session) return
    try {
      await this.call('logout', { refreshToken: session.refreshToken })
    } finally {
      this.session = null
    }
  }

  /** Creates an account (open registration, or as an admin). */
  async register(username: string, password: string): Promise<PublicUser> {
    return this.call<PublicUser>('register', { username, password }, undefined, this.hasCredential())
  }

  private hasCredential(): boolean {
    return this.apiKey !== null || this.session !== null
  }

  private adopt(pair: TokenPair): void {
    this.session = {
      accessToken: pair.accessToken,
      refreshToken: pair.refreshToken,
      accessExpiresAt: Date.now() + pair.expiresIn * 1000,
      user: pair.user,
    }
  }

  /** Trades the refresh token for a new pair (once at a time). */
  private refreshSession(): Promise<void> {
    this.refreshing ??= (async () => {
      const session = this.session
      if (!session) throw new MeshError('ERR_AUTH_REQUIRED', 'not logged in')
      try {
        this.adopt(
          await this.call<TokenPair>('refresh', { refreshToken: session.refreshToken }, undefined, false),
        )
      } catch (err) {
        this.session = null
        throw err
      }
    })().finally(() => {
      this.refreshing = null
    })
    return this.refreshing
  }

  /** What to send as `auth`: the API key, or a fresh access token. */
  private async credential(): Promise<string | undefined> {
    if (this.apiKey) return this.apiKey
    if (!this.session) return undefined
    if (this.session.accessExpiresAt - Date.now() < REFRESH_MARGIN_MS) await this.refreshSession()
    return this.session?.accessToken
  }

  private async withAuth(payload: unknown): Promise<Record<string, unknown>> {
    const auth = await this.credential()
    const body =
      typeof payload === 'object' && payload !== null ? { ...(payload as Record<string, unknown>) } : {}
    if (auth !== undefined) body.auth = auth
    return body
  }

  /** An expired access token (clock skew, a long pause): refresh once and try again. */
  private async retryExpired<T>(run: () => Promise<T>): Promise<T> {
    try {
      return await run()
    } catch (err) {
      const e = err as MeshError
      if (e?.code !== 'ERR_AUTH_INVALID' || e.details?.reason !== 'expired' || !this.session) throw err
      await this.refreshSession()
      return run()
    }
  }

  protected override get serves(): boolean {
    return false
  }

  /** The gateway in use, found on the DHT (or the configured key) on first need. */
  async connectGateway(): Promise<PeerConnection> {
    if (this.gateway && !this.gateway.closed) return this.gateway
    this.finding ??= this.findGateway().finally(() => {
      this.finding = null
    })
    return this.finding
  }

  private async findGateway(): Promise<PeerConnection> {
    await this.ready()
    const deadline = Date.now() + FIND_GATEWAY_TIMEOUT_MS
    while (!this.closing) {
      const keys = this.config.gateway
        ? [Buffer.from(this.config.gateway, 'hex')]
        : await this.net.lookup('gateway')
      for (const key of keys) {
        const peer = this.net.peer(key)
        try {
          const pong = await peer.request<{ role?: string }>('ping', null, {
            timeout: GATEWAY_PING_TIMEOUT_MS,
          })
          if (pong?.role !== 'gateway') throw new MeshError('ERR_UNAVAILABLE', 'peer is not a gateway')
          this.gateway = peer
          peer.onClose(() => {
            if (this.gateway === peer) this.gateway = null
          })
          return peer
        } catch (err) {
          this.log.debug({ err, gateway: key.toString('hex') }, 'gateway did not answer')
          this.net.forget(key)
        }
      }
      if (Date.now() >= deadline) break
      await new Promise((resolve) => setTimeout(resolve, FIND_RETRY_MS))
    }
    throw new MeshError('ERR_UNAVAILABLE', `no gateway answered on mesh '${this.config.mesh}'`)
  }

  /**
   * A request to the gateway, carrying the credential unless `authenticated` is false.
   * @throws the gateway's MeshError codes
   */
  async call<T>(method: string, payload: unknown = null, timeout?: number, authenticated = true): Promise<T> {
    const gw = await this.connectGateway()
    const opts = timeout === undefined ? {} : { timeout }
    if (!authenticated) return gw.request<T>(method, payload, opts)
    return this.retryExpired(async () => gw.request<T>(method, await this.withAuth(payload), opts))
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

  private stream(payload: InferRequestInput): MeshStream {
    return new MeshStream(async (cancel, onText) => {
      const gw = await this.connectGateway()
      return this.retryExpired(async () =>
        gw.stream<InferResult>('infer', await this.withAuth(payload), {
          cancel,
          timeout: this.rpcTimeout(payload),
          onChunk: (chunk) => onText(chunk.text),
        }),
      )
    })
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
