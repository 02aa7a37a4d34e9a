import type Hyperbee from 'hyperbee'
import type { PublicKey, PublicUser, Role, TokenPair } from '../../kernel/accounts.js'
import type { AuthConfig } from '../../kernel/config.js'
import { MeshError } from '../../kernel/errors.js'
import { Facility } from '../facility.js'
import { Serial } from '../lib/serial.js'
import type { Logger } from '../log.facility.js'
import type { StoreFacility } from '../store.facility.js'
import { ApiKeys, type KeyRecord, publicKey } from './api-keys.js'
import { Authenticator } from './authenticator.js'
import type { Identity } from './identity.js'
import { LoginGuard } from './login-guard.js'
import { checkable, MAX_PASSWORD, Passwords, validPassword } from './passwords.js'
import { Tokens } from './tokens.js'
import { publicUser, USERNAME_RE, type UserRecord, Users } from './users.js'

export { API_KEY_PREFIX, type KeyRecord } from './api-keys.js'
export type { Identity } from './identity.js'
export { keyLimitOverridesSchema, userLimitOverridesSchema } from './limit-overrides.js'
export { MAX_PASSWORD, MIN_PASSWORD, passwordLength } from './passwords.js'
export { REFRESH_PREFIX } from './tokens.js'
export type { UserRecord } from './users.js'

/**
 * Users, passwords, tokens and API keys, in the gateway's Hyperbee `auth`
 * (layout in docs/data-model.md): the one entry point the gateway and the CLI
 * use, composing users.ts, passwords.ts, login-guard.ts, tokens.ts,
 * api-keys.ts and authenticator.ts.
 *
 * Secrets are never stored in clear: passwords as scrypt hashes (per-user
 * salt, cost stored with the hash), API keys and refresh tokens as SHA-256
 * (they are 192-bit random, so a fast hash is enough).
 */

export const AUTH_BEE = 'auth'
const SWEEP_INTERVAL_MS = 60_000

const wrongLogin = () => new MeshError('ERR_AUTH_INVALID', 'wrong username or password')

export interface AuthFacilityOptions {
  store: StoreFacility
  config: AuthConfig
  logger: Logger
}

export class AuthFacility extends Facility {
  readonly name = 'auth'
  private readonly storeFacility: StoreFacility
  private readonly config: AuthConfig
  private readonly log: Logger
  private bee: Hyperbee | null = null
  /** Writes that read before they write (refresh rotation, user updates) run one at a time. */
  private readonly serial = new Serial()
  private readonly passwords: Passwords
  private readonly guard: LoginGuard
  private readonly users: Users
  private readonly keys: ApiKeys
  private readonly tokens: Tokens
  private readonly authenticator: Authenticator
  private sweepTimer: NodeJS.Timeout | null = null

  constructor(opts: AuthFacilityOptions) {
    super()
    const { store, config, logger } = opts
    this.storeFacility = store
    this.config = config
    this.log = logger
    const db = () => this.db
    this.passwords = new Passwords(config.scrypt, logger)
    this.guard = new LoginGuard(config)
    this.users = new Users({ db, passwords: this.passwords, serial: this.serial, log: logger })
    this.keys = new ApiKeys({ db, users: this.users, log: logger })
    this.tokens = new Tokens({ db, users: this.users, serial: this.serial, config, log: logger })
    this.authenticator = new Authenticator(this.users, this.keys, this.tokens, config.cacheSize)
  }

  protected override async _open(): Promise<void> {
    const bee = await this.storeFacility.bee(AUTH_BEE)
    this.bee = bee
    await this.tokens.load(bee)
    await this.users.load(bee)
    await this.keys.load(bee)
    await this.tokens.loadRevoked(bee)
    this.sweepTimer = setInterval(() => this.sweep(), SWEEP_INTERVAL_MS)
    this.sweepTimer.unref()
  }

  /** Forgets what has expired: logged-out tokens past their expiry, failures past the window. */
  private sweep(now = Date.now()): void {
    if (this.bee) this.tokens.sweep(now)
    this.guard.sweep(now)
  }

  protected override async _close(): Promise<void> {
    if (this.sweepTimer) clearInterval(this.sweepTimer)
    this.sweepTimer = null
    await this.serial.idle()
    this.bee = null
    this.authenticator.clear()
  }

  private get db(): Hyperbee {
    if (!this.bee) throw new MeshError('ERR_UNAVAILABLE', 'auth is closed')
    return this.bee
  }

  // ------------------------------------------------------------------ passwords

  /** `scrypt$N$r$p$<salt b64>$<hash b64>` @throws ERR_BUSY */
  hashPassword(password: string): Promise<string> {
    return this.passwords.hash(password)
  }

  /** @throws ERR_BUSY */
  verifyPassword(password: string, stored: string): Promise<boolean> {
    return this.passwords.verify(password, stored)
  }

  // ------------------------------------------------------------------ users

  get userCount(): number {
    return this.users.count
  }

  user(username: string): UserRecord | undefined {
    return this.users.get(username)
  }

  userById(id: string): UserRecord | undefined {
    return this.users.getById(id)
  }

  static publicUser(u: UserRecord): PublicUser {
    return publicUser(u)
  }

  listUsers(): PublicUser[] {
    return this.users.list()
  }

  /** @throws ERR_BAD_REQUEST (bad name, password or limits), ERR_CONFLICT (name taken), ERR_BUSY */
  createUser(input: {
    username: unknown
    password: unknown
    role?: Role
    limits?: unknown
  }): Promise<PublicUser> {
    return this.users.create(input)
  }

  /**
   * Admin changes: role, limit overrides (null removes a limit, an absent field
   * keeps the default), disabled. Disabling ends every token and key at once.
   * @throws ERR_NOT_FOUND, ERR_BAD_REQUEST
   */
  updateUser(
    username: string,
    changes: { role?: Role; limits?: unknown; disabled?: boolean; resetLimits?: boolean },
  ): Promise<PublicUser> {
    return this.users.update(username, changes)
  }

  /**
   * Whether an identity is an API key with restrictions of its own (a model
   * list, or limits): such a key may not do what would shed them.
   */
  restricted(identity: Identity): boolean {
    return this.keys.restricted(identity)
  }

  /**
   * The caller's own new password, given the current one. The check is a login
   * attempt from `source` and from the credential, under the same limits, so a
   * stolen token is no guessing oracle. A restricted API key may not: knowing
   * the password would escape its restrictions.
   * @throws ERR_FORBIDDEN (restricted key), ERR_AUTH_INVALID (wrong current password),
   *   ERR_RATE_LIMITED (too many failures), ERR_BUSY, ERR_BAD_REQUEST
   */
  async changePassword(identity: Identity, current: unknown, next: unknown, source: string): Promise<void> {
    if (this.keys.restricted(identity)) {
      throw new MeshError(
        'ERR_FORBIDDEN',
        'a restricted API key cannot change the password: log in, or use an unrestricted key',
      )
    }
    const password = validPassword(next, 'newPassword')
    const u = this.users.getById(identity.userId)
    const wrong = () => new MeshError('ERR_AUTH_INVALID', 'the current password is wrong')
    if (!u || !checkable(current)) throw wrong()
    const credential = `credential:${identity.keyId ?? identity.jti ?? identity.userId}`
    if (!(await this.checkPassword(u.username, current, [source, credential], false))) {
      this.log.warn({ user: u.username, peer: source }, 'password change refused: wrong current password')
      throw wrong()
    }
    await this.users.replacePassword(u.username, password)
    this.log.info({ user: u.username }, 'password changed')
  }

  /** Admin reset of a user's password; ends the user's sessions. @throws ERR_NOT_FOUND, ERR_BAD_REQUEST */
  async setPassword(username: string, next: unknown): Promise<void> {
    const password = validPassword(next, 'password')
    this.users.require(username)
    await this.users.replacePassword(username, password)
    this.log.info({ user: username }, 'password reset')
  }

  // ------------------------------------------------------------------ login and tokens

  /**
   * Checks a password and issues tokens, under the brute-force limits of
   * login-guard.ts. `source` is the caller's RPC public key (hex).
   * @throws ERR_AUTH_INVALID, ERR_RATE_LIMITED (too many failures), ERR_BUSY,
   *   ERR_FORBIDDEN (disabled), ERR_BAD_REQUEST
   */
  async login(usernameInput: unknown, password: unknown, source: string): Promise<TokenPair> {
    if (typeof usernameInput !== 'string' || !checkable(password)) {
      throw MeshError.badRequest(
        `username and password are required strings (a password of at most ${MAX_PASSWORD} characters)`,
      )
    }
    // A name no account can have is simply wrong: never tracked, logged or hashed against.
    if (!USERNAME_RE.test(usernameInput)) throw wrongLogin()
    const username = usernameInput.toLowerCase()
    const trusted = this.guard.trusted(username, source)
    if (!(await this.checkPassword(username, password, [source], trusted))) {
      // A name that is no account may be a password typed in the wrong field: not logged.
      const user = this.users.get(username) ? username : '(no such account)'
      this.log.warn({ user, peer: source }, 'login failed')
      throw wrongLogin()
    }
    const user = this.users.get(username)
    if (!user) throw wrongLogin()
    if (user.disabled) throw new MeshError('ERR_FORBIDDEN', `user '${username}' is disabled`)
    this.guard.trust(username, source, this.config.refreshTtlSec * 1000)
    return this.tokens.issue(user)
  }

  /**
   * Checks `password` for account `username` as tried from `sources` (the
   * caller's peer; for a password change also its credential) under the login
   * guard. An unknown name goes through the same bookkeeping but costs no hash.
   * @throws ERR_RATE_LIMITED, ERR_BUSY (the hash queue is full, for every name alike)
   */
  private checkPassword(
    username: string,
    password: string,
    sources: string[],
    trusted: boolean,
  ): Promise<boolean> {
    return this.guard.attempt(username, sources, trusted, () =>
      this.passwords.check(password, this.users.get(username)?.passwordHash),
    )
  }

  /**
   * Trades a refresh token for a new pair; the old one stops working (rotation).
   * Presenting an already rotated token revokes its whole family.
   * @throws ERR_AUTH_INVALID
   */
  refresh(token: unknown): Promise<TokenPair> {
    return this.tokens.refresh(token)
  }

  /** Ends a session: the access token now, and the refresh token's family if given. */
  logout(identity: Identity, refreshToken?: unknown): Promise<void> {
    return this.tokens.logout(identity, refreshToken)
  }

  /**
   * Who a bearer credential (API key or access JWT) belongs to; whitespace around it is ignored.
   * @throws ERR_AUTH_REQUIRED (none given), ERR_AUTH_INVALID (anything wrong with it)
   */
  authenticate(input: unknown, now = Date.now()): Identity {
    return this.authenticator.authenticate(input, now)
  }

  // ------------------------------------------------------------------ API keys

  static publicKey(k: KeyRecord): PublicKey {
    return publicKey(k)
  }

  key(id: string): KeyRecord | undefined {
    return this.keys.get(id)
  }

  /**
   * A new API key for a user; the key itself is returned here only, never stored.
   * A key made with an API key (`madeWith`) expires no later than that key: an
   * expiring key cannot mint a lasting one.
   * @throws ERR_BAD_REQUEST, ERR_NOT_FOUND
   */
  createKey(
    userId: string,
    input: { name?: unknown; expiresInDays?: unknown; models?: unknown; limits?: unknown },
    madeWith?: Identity,
  ): Promise<{ key: string } & PublicKey> {
    return this.keys.create(userId, input, madeWith)
  }

  listKeys(userId?: string): PublicKey[] {
    return this.keys.list(userId)
  }

  /** @throws ERR_NOT_FOUND (also for a key of another user, unless `asAdmin`) */
  revokeKey(id: unknown, userId: string, asAdmin = false): Promise<PublicKey> {
    return this.keys.revoke(id, userId, asAdmin)
  }
}
