/**
 * What a client sends as `auth`: an API key, or the access token of a login session, which
 * it refreshes before it expires and again when a gateway refuses it. Apart from MeshClient
 * because session keeping (expiry, one refresh at a time, a session that belongs to another
 * gateway after a failover) is its own concern.
 */
import type { PeerConnection } from '../../facilities/net/peer-connection.js'
import type { PublicUser, TokenPair } from '../../kernel/accounts.js'
import { MeshError } from '../../kernel/errors.js'
import { isRecord } from '../../kernel/util.js'

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

/** Sends a refresh token to a gateway: the new pair, and the gateway that answered. */
export type RefreshCall = (refreshToken: string) => Promise<{ value: TokenPair; gateway: PeerConnection }>

/** The client's credential: an API key, a login session, or none. */
export class Credentials {
  private session: Session | null = null
  private refreshing: Promise<void> | null = null

  /**
   * @param refresh sends the refresh call (without a credential)
   * @param lastGateway the key, in hex, of the gateway a failed refresh went to
   */
  constructor(
    private apiKey: string | null,
    private readonly refresh: RefreshCall,
    private readonly lastGateway: () => string | undefined,
  ) {}

  /** Uses an API key from now on (ends any login session). */
  useApiKey(key: string): void {
    this.apiKey = key
    this.session = null
  }

  /** The logged-in user, if there is a session. */
  get user(): PublicUser | null {
    return this.session?.user ?? null
  }

  /** Whether there is anything to send. */
  get present(): boolean {
    return this.apiKey !== null || this.session !== null
  }

  /** Starts a session with the tokens `gateway` issued at login (the API key is no longer sent). */
  signIn(pair: TokenPair, gateway: PeerConnection): void {
    this.adopt(pair, gateway)
    this.apiKey = null
  }

  /** Ends the session: `tell` gives its refresh token to the gateway; the session is gone either way. */
  async signOut(tell: (refreshToken: string) => Promise<unknown>): Promise<void> {
    const session = this.session
    if (!session) return
    try {
      await tell(session.refreshToken)
    } finally {
      this.session = null
    }
  }

  /**
   * Sends `payload` with the credential through `send`. A refused access token is refreshed
   * once and sent again when it had expired (clock skew, a long pause), or when the session
   * is another gateway's (after a failover): that gateway knows the refresh token only if it
   * shares the accounts, else the refresh fails with ERR_AUTH_REQUIRED.
   */
  async send<T>(
    gw: PeerConnection,
    payload: unknown,
    send: (body: Record<string, unknown>) => Promise<T>,
  ): Promise<T> {
    try {
      return await send(await this.withAuth(payload))
    } catch (err) {
      const session = this.session
      if (!(err instanceof MeshError) || err.code !== 'ERR_AUTH_INVALID' || !session) throw err
      const foreign = session.gateway !== gw.publicKey.toString('hex')
      if (err.details?.reason !== 'expired' && !foreign) throw err
      await this.refreshSession()
      return send(await this.withAuth(payload))
    }
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
        const { value, gateway } = await this.refresh(session.refreshToken)
        this.adopt(value, gateway)
      } catch (err) {
        this.session = null
        throw this.refreshRefused(err, session)
      }
    })().finally(() => {
      this.refreshing = null
    })
    return this.refreshing
  }

  /** A refresh refused by a gateway that did not issue the session says to sign in again. */
  private refreshRefused(err: unknown, session: Session): unknown {
    const answeredBy = this.lastGateway()
    const invalid = err instanceof MeshError && err.code === 'ERR_AUTH_INVALID'
    if (!invalid || !answeredBy || answeredBy === session.gateway) return err
    return new MeshError(
      'ERR_AUTH_REQUIRED',
      `signed in at gateway ${session.gateway.slice(0, 8)}, and gateway ${answeredBy.slice(0, 8)} does not know the session: sign in again`,
      { gateway: answeredBy, sessionGateway: session.gateway },
      err,
    )
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
    const body = isRecord(payload) ? { ...payload } : {}
    if (auth !== undefined) body.auth = auth
    return body
  }
}
