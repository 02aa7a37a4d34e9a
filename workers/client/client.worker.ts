import type { PeerConnection } from '../../facilities/net/peer-connection.js'
import { CancelToken } from '../../kernel/cancel.js'
import { type ClientConfig, type ConfigInput, clientConfigSchema, parseConfig } from '../../kernel/config.js'
import { MeshError } from '../../kernel/errors.js'
import type { InferRequestInput, InferResult } from '../../kernel/inference.js'
import type { BaseStatus } from '../base.worker.js'
import { BaseWorker, type WorkerOptions } from '../base.worker.js'

export interface GatewayStatus extends BaseStatus {
  processors: ProcessorView[]
  /** Requests being forwarded, and waiting for a free processor slot. */
  active: number
  queued: number
  strategy: string
}

import type {
  LimitState,
  PublicKey,
  PublicUser,
  TokenPair,
  UsageCounter,
  UsageRecord,
  UsageRow,
} from '../../kernel/accounts.js'
import type {
  ChatRequest,
  GenerateRequest,
  ModelDetails,
  ModelInfo,
  ProcessorView,
} from '../../kernel/wire.js'

/** How long a gateway may take to answer the ping that confirms a new connection. */
const GATEWAY_PING_TIMEOUT_MS = 3_000
/** After a call failed on a connection that still looks open: how long its ping may take. */
const LIVENESS_TIMEOUT_MS = 2_000
/**
 * A call still waiting after this long has its gateway pinged (again each time as long): a
 * gateway that was killed leaves its connection looking open, and the call would otherwise
 * wait out its whole timeout (10 s for most calls) before the client looks for it again.
 */
const WATCHDOG_MS = 2_000
/** First wait between rounds of dials when no gateway answered; doubles up to the max. */
const FIND_RETRY_MS = 250
const FIND_RETRY_MAX_MS = 2_000
/**
 * Methods that change nothing on the gateway: sent again, to whichever gateway answers,
 * when the connection died under them. Anything else is sent again only if it never left.
 */
const IDEMPOTENT = new Set([
  'ping',
  'status',
  'models',
  'show',
  'ps',
  'usage',
  'whoami',
  'listKeys',
  'listUsers',
])

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))
const short = (key: Buffer) => key.toString('hex').slice(0, 8)

/**
 * `call`, with its gateway pinged every WATCHDOG_MS while it waits: a gateway that does not
 * answer is taken for dead and its connection closed, which fails the call at once (as a
 * lost gateway: see `gatewayLost`) instead of after its timeout.
 */
async function watchdog<T>(gw: PeerConnection, call: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  let done = false
  const check = () => {
    gw.request('ping', null, { timeout: LIVENESS_TIMEOUT_MS }).then(
      () => {
        if (!done) timer = setTimeout(check, WATCHDOG_MS)
      },
      () => {
        if (!done) gw.destroy()
      },
    )
  }
  timer = setTimeout(check, WATCHDOG_MS)
  try {
    return await call
  } finally {
    done = true
    clearTimeout(timer)
  }
}

/** A gateway that is stopping refused the call before doing anything with it: safe to send again. */
function refusedForDrain(err: unknown): boolean {
  return err instanceof MeshError && err.details?.draining === true
}

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
  /** The gateway that issued the tokens, in hex: another one (until accounts are shared) refuses them. */
  gateway: string
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
  /** The gateway used last: dialled first when looking again (a restarted gateway keeps its key). */
  private lastGateway: Buffer | null = null
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
    this.adopt(pair, gateway)
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

  private adopt(pair: TokenPair, gateway: PeerConnection): void {
    this.session = {
      accessToken: pair.accessToken,
      refreshToken: pair.refreshToken,
      accessExpiresAt: Date.now() + pair.expiresIn * 1000,
      user: pair.user,
      gateway: gateway.publicKey.toString('hex'),
    }
  }

  /**
   * Trades the refresh token for a new pair (once at a time).
   * @throws ERR_AUTH_REQUIRED when a gateway other than the session's refuses it (sign in again)
   */
  private refreshSession(): Promise<void> {
    this.refreshing ??= (async () => {
      const session = this.session
      if (!session) throw new MeshError('ERR_AUTH_REQUIRED', 'not logged in')
      try {
        const { value, gateway } = await this.invoke<TokenPair>(
          'refresh',
          { refreshToken: session.refreshToken },
          undefined,
          false,
        )
        this.adopt(value, gateway)
      } catch (err) {
        this.session = null
        const answeredBy = this.lastGateway?.toString('hex')
        if ((err as MeshError)?.code === 'ERR_AUTH_INVALID' && answeredBy && answeredBy !== session.gateway) {
          throw new MeshError(
            'ERR_AUTH_REQUIRED',
            `signed in at gateway ${session.gateway.slice(0, 8)}, and gateway ${answeredBy.slice(0, 8)} does not know the session: sign in again`,
            { gateway: answeredBy, sessionGateway: session.gateway },
            err,
          )
        }
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

  /**
   * Sends `payload` with the credential through `send`. A refused access token is refreshed
   * once and sent again when it had expired (clock skew, a long pause), or when the session
   * is another gateway's (after a failover): that gateway knows the refresh token only if it
   * shares the accounts, else the refresh fails with ERR_AUTH_REQUIRED.
   */
  private async sendAuthed<T>(
    gw: PeerConnection,
    payload: unknown,
    send: (body: Record<string, unknown>) => Promise<T>,
  ): Promise<T> {
    try {
      return await send(await this.withAuth(payload))
    } catch (err) {
      const e = err as MeshError
      const session = this.session
      if (e?.code !== 'ERR_AUTH_INVALID' || !session) throw err
      const foreign = session.gateway !== gw.publicKey.toString('hex')
      if (e.details?.reason !== 'expired' && !foreign) throw err
      await this.refreshSession()
      return send(await this.withAuth(payload))
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

  /**
   * Dials the gateway used last, then the others announced on the DHT, in rounds with
   * backoff, until one answers a ping or `reconnect.timeoutMs` passes.
   * @throws ERR_UNAVAILABLE naming each gateway tried and why it failed
   */
  private async findGateway(): Promise<PeerConnection> {
    await this.ready()
    const { timeoutMs, connectTimeoutMs } = this.config.reconnect
    const deadline = Date.now() + timeoutMs
    const failures = new Map<string, string>()
    let wait = FIND_RETRY_MS
    while (!this.closing) {
      for (const key of await this.gatewayCandidates(failures)) {
        const left = deadline - Date.now()
        if (left <= 0 || this.closing) break
        try {
          return await this.dialGateway(key, Math.min(connectTimeoutMs, left))
        } catch (err) {
          const reason = MeshError.from(err).message
          failures.set(short(key), reason)
          this.log.debug({ gateway: key.toString('hex'), reason }, 'gateway did not answer')
          this.net.forget(key)
        }
      }
      const left = deadline - Date.now()
      if (left <= 0) break
      await sleep(Math.min(wait, left))
      wait = Math.min(wait * 2, FIND_RETRY_MAX_MS)
    }
    if (this.closing) throw new MeshError('ERR_UNAVAILABLE', 'the client is closing')
    const tried = [...failures].map(([key, reason]) => `${key}: ${reason}`).join('; ')
    throw new MeshError(
      'ERR_UNAVAILABLE',
      `no gateway answered on mesh '${this.config.mesh}' within ${timeoutMs} ms (${tried || 'none is announced on the DHT'})`,
      { tried: Object.fromEntries(failures) },
    )
  }

  /** The configured gateway; or the one used last, then those announced (records may be stale). */
  private async gatewayCandidates(failures: Map<string, string>): Promise<Buffer[]> {
    if (this.config.gateway) return [Buffer.from(this.config.gateway, 'hex')]
    let found: Buffer[] = []
    try {
      found = await this.net.lookup('gateway')
    } catch (err) {
      failures.set('lookup', MeshError.from(err).message)
    }
    const last = this.lastGateway
    return last ? [last, ...found.filter((key) => !key.equals(last))] : found
  }

  /** Opens a connection (its own timeout: a dial can be slow) and checks a gateway answers on it. */
  private async dialGateway(key: Buffer, connectTimeoutMs: number): Promise<PeerConnection> {
    const peer = this.net.peer(key)
    await peer.opened(connectTimeoutMs)
    const pong = await peer.request<{ role?: string; draining?: boolean }>('ping', null, {
      timeout: GATEWAY_PING_TIMEOUT_MS,
    })
    if (pong?.role !== 'gateway') {
      throw new MeshError('ERR_UNAVAILABLE', `peer is ${pong?.role ? `a ${pong.role}` : 'not a worker'}`)
    }
    // It answers while it stops, but takes nothing new: look for another, or for it to come back.
    if (pong.draining === true) throw new MeshError('ERR_UNAVAILABLE', 'the gateway is shutting down')
    if (this.lastGateway && !this.lastGateway.equals(key)) {
      this.log.info({ from: this.lastGateway.toString('hex'), to: key.toString('hex') }, 'gateway changed')
    }
    this.gateway = peer
    this.lastGateway = key
    peer.onClose(() => {
      if (this.gateway === peer) this.gateway = null
    })
    return peer
  }

  /**
   * Whether a call failed because its gateway went away rather than because the gateway
   * answered so: the connection closed, or it failed with ERR_UNAVAILABLE / ERR_TIMEOUT and
   * the gateway does not answer a ping either (it died, or is draining to stop). A lost
   * gateway's connection is dropped, so the next call looks again.
   */
  private async gatewayLost(err: unknown, gw: PeerConnection): Promise<boolean> {
    const code = (err as MeshError)?.code
    if (code !== 'ERR_UNAVAILABLE' && code !== 'ERR_TIMEOUT') return false
    if (refusedForDrain(err)) {
      // It is stopping: it took nothing, and the next call looks for another gateway.
      gw.destroy()
    } else if (!gw.closed) {
      try {
        const pong = await gw.request<{ role?: string }>('ping', null, { timeout: LIVENESS_TIMEOUT_MS })
        if (pong?.role === 'gateway') return false
      } catch {}
      // Not net.forget(key): a connection to the same key made since (a restarted gateway) must stay.
      gw.destroy()
    }
    if (this.gateway === gw) this.gateway = null
    return true
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
  private async invoke<T>(
    method: string,
    payload: unknown,
    timeout: number | undefined,
    authenticated: boolean,
  ): Promise<{ value: T; gateway: PeerConnection }> {
    const opts = timeout === undefined ? {} : { timeout }
    const deadline = Date.now() + this.config.reconnect.timeoutMs
    const resendable = IDEMPOTENT.has(method)
    while (true) {
      const gw = await this.connectGateway()
      const sent = gw.open
      try {
        const value = await watchdog(
          gw,
          authenticated
            ? this.sendAuthed(gw, payload, (body) => gw.request<T>(method, body, opts))
            : gw.request<T>(method, payload, opts),
        )
        return { value, gateway: gw }
      } catch (err) {
        const lost = await this.gatewayLost(err, gw)
        const taken = sent && !refusedForDrain(err)
        if (!lost || (taken && !resendable) || this.closing || Date.now() >= deadline) throw err
        this.log.debug({ method, err }, 'gateway lost: sending again')
      }
    }
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
      const deadline = Date.now() + this.config.reconnect.timeoutMs
      while (true) {
        const gw = await this.connectGateway()
        const sent = gw.open
        let chunks = 0
        try {
          return await watchdog(
            gw,
            this.sendAuthed(gw, payload, (body) =>
              gw.stream<InferResult>('infer', body, {
                cancel,
                timeout: this.rpcTimeout(payload),
                onChunk: (chunk) => {
                  chunks++
                  onText(chunk.text)
                },
              }),
            ),
          )
        } catch (err) {
          const lost = await this.gatewayLost(err, gw)
          if (lost && chunks > 0) {
            throw new MeshError(
              'ERR_STREAM_BROKEN',
              `the gateway went away after ${chunks} chunks: ${MeshError.from(err).reason}`,
              { chunks },
              err,
            )
          }
          const taken = sent && !refusedForDrain(err)
          if (!lost || taken || cancel.aborted || this.closing || Date.now() >= deadline) throw err
        }
      }
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
