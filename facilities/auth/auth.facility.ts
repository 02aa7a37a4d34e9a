import { createHash, randomBytes, randomInt, scrypt as scryptCb, timingSafeEqual } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type Hyperbee from 'hyperbee'
import jwt from 'jsonwebtoken'
import { z } from 'zod'
import type { PublicKey, PublicUser, Role, TokenPair } from '../../kernel/accounts.js'
import type { AuthConfig, KeyLimits, UserLimits } from '../../kernel/config.js'
import { validate } from '../../kernel/config.js'
import { MeshError } from '../../kernel/errors.js'
import { baseModel } from '../../kernel/inference.js'
import { Facility } from '../facility.js'
import { Serial } from '../lib/serial.js'
import type { Logger } from '../log.facility.js'
import type { StoreFacility } from '../store.facility.js'

/**
 * Users, passwords, tokens and API keys, in the gateway's Hyperbee `auth`
 * (layout in docs/data-model.md). Every user and key is held in memory too, so
 * checking a request costs no I/O: an API key is one SHA-256, a JWT one HMAC
 * the first time and a map lookup after (cached until it expires), plus the
 * checks that make revocation immediate (user disabled, token version, key
 * revoked, access token logged out).
 *
 * Secrets are never stored in clear: passwords as scrypt hashes (per-user
 * salt, cost stored with the hash), API keys and refresh tokens as SHA-256
 * (they are 192-bit random, so a fast hash is enough). JWTs are HS256 with the
 * algorithm pinned on verify, and issuer, audience and expiry checked.
 */

export const AUTH_BEE = 'auth'
const JWT_SECRET_KEY = 'config/jwt-secret'
const JWT_ALGORITHM = 'HS256'
export const API_KEY_PREFIX = 'lmk'
export const REFRESH_PREFIX = 'lmr'
const ID_BYTES = 8
const SECRET_BYTES = 24
const SALT_BYTES = 16
const HASH_BYTES = 32
/** scrypt runs on libuv's pool (4 threads); keep two for everything else. */
const MAX_CONCURRENT_SCRYPT = 2
/**
 * Hashes waiting for a slot; past it ERR_BUSY. Each is one real account's
 * check (unknown names never hash), so a flood cannot queue a real login
 * behind minutes of work.
 */
const MAX_SCRYPT_WAITING = 64
/** Recent durations of real password checks; an unknown name's answer waits one of them. */
const CHECK_TIME_SAMPLES = 32
export const MIN_PASSWORD = 8
const SWEEP_INTERVAL_MS = 60_000
export const MAX_PASSWORD = 1024

export interface UserRecord {
  id: string
  username: string
  role: Role
  passwordHash: string
  /** Overrides of the configured defaults; a null value means no limit. */
  limits: Partial<UserLimits>
  disabled: boolean
  /** Bumped on password change and disable: every token issued before stops working. */
  tokenVersion: number
  createdAt: string
  updatedAt: string
}

export interface KeyRecord {
  id: string
  userId: string
  /** SHA-256 of the key's secret part, hex. */
  hash: string
  name: string
  createdAt: string
  expiresAt: string | null
  /** Models the key may use; null: all. */
  models: string[] | null
  limits: Partial<KeyLimits>
  revokedAt: string | null
}

interface RefreshRecord {
  userId: string
  family: string
  hash: string
  tokenVersion: number
  expiresAt: number
  rotatedAt: number | null
}

/** Who is calling, as established by a token or key. */
export interface Identity {
  userId: string
  username: string
  role: Role
  /** The API key used, or null for a JWT. */
  keyId: string | null
  models: string[] | null
  /** The access token's id (JWT only), for logout. */
  jti: string | null
  /** Access token expiry (ms), or the key's, or null. */
  expiresAt: number | null
}

interface AccessClaims {
  sub: string
  name: string
  role: Role
  ver: number
  typ: 'access'
  jti: string
  exp: number
}

interface Cached {
  identity: Identity
  /** For JWTs: the token version it was issued under. */
  ver: number
}

const USERNAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$/
const usernameSchema = z
  .string()
  .regex(USERNAME_RE, '1-64 letters, digits, . _ - (starting with a letter or digit)')
  .transform((s) => s.toLowerCase())

/**
 * A password's length in code points: the one measure of every path (create,
 * reset, change, login), so a password accepted once is never refused later
 * for its length (an emoji is one character, not two UTF-16 units). Exact up
 * to MAX_PASSWORD; anything longer counts as MAX_PASSWORD + 1.
 */
export function passwordLength(password: string): number {
  let n = 0
  for (const _ of password) if (++n > MAX_PASSWORD) break
  return n
}

const passwordSchema = z.string().superRefine((s, ctx) => {
  const n = passwordLength(s)
  if (n < MIN_PASSWORD) ctx.addIssue({ code: 'custom', message: `at least ${MIN_PASSWORD} characters` })
  if (n > MAX_PASSWORD) ctx.addIssue({ code: 'custom', message: `at most ${MAX_PASSWORD} characters` })
})
const limitValue = z.number().int().positive().nullable()
export const userLimitOverridesSchema = z
  .object({
    rpm: limitValue.optional(),
    tpm: limitValue.optional(),
    dailyTokens: limitValue.optional(),
    monthlyTokens: limitValue.optional(),
  })
  .strict()
export const keyLimitOverridesSchema = z
  .object({ rpm: limitValue.optional(), tpm: limitValue.optional() })
  .strict()

/** What `createKey` takes. */
const keySpecSchema = z
  .object({
    name: z.string().min(1).max(128),
    expiresInDays: z.number().positive().max(36_500).optional(),
    models: z.array(z.string().min(1).max(256)).min(1).max(256).optional(),
    limits: keyLimitOverridesSchema.optional(),
  })
  .strict()

const sha256 = (s: string) => createHash('sha256').update(s).digest()
const nowIso = () => new Date().toISOString()

function sameHash(a: Buffer, hex: string): boolean {
  const b = Buffer.from(hex, 'hex')
  return a.length === b.length && timingSafeEqual(a, b)
}

function scrypt(password: string, salt: Buffer, N: number, r: number, p: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    // maxmem must cover 128 * N * r bytes, plus slack.
    scryptCb(password, salt, HASH_BYTES, { N, r, p, maxmem: 256 * N * r }, (err, key) =>
      err ? reject(err) : resolve(key),
    )
  })
}

/** The shape of each opaque token prefix, compiled once (API keys are parsed on every request). */
const opaqueShapes = new Map<string, RegExp>()

/** Parses `<prefix>_<16 hex id>_<secret>`; null when it is not that shape. */
function parseOpaque(token: string, prefix: string): { id: string; secret: string } | null {
  let shape = opaqueShapes.get(prefix)
  if (!shape) {
    shape = new RegExp(`^${prefix}_([0-9a-f]{${ID_BYTES * 2}})_([A-Za-z0-9_-]{20,64})$`)
    opaqueShapes.set(prefix, shape)
  }
  const m = shape.exec(token)
  return m ? { id: m[1] as string, secret: m[2] as string } : null
}

/** A new opaque token, and the hash of its secret (all that is stored). */
function makeOpaque(prefix: string): { id: string; token: string; hash: string } {
  const id = randomBytes(ID_BYTES).toString('hex')
  const secret = randomBytes(SECRET_BYTES).toString('base64url')
  return { id, token: `${prefix}_${id}_${secret}`, hash: sha256(secret).toString('hex') }
}

/** Whether a parsed token's secret is the one whose hash was stored (constant time). */
function opaqueMatches(parsed: { secret: string }, hash: string): boolean {
  return sameHash(sha256(parsed.secret), hash)
}

/** Names tracked at most; past it the oldest are forgotten (a flood of made-up names stays bounded). */
const MAX_TRACKED_NAMES = 100_000

/** Drops the oldest entries of a map kept in insertion order until it holds at most MAX_TRACKED_NAMES. */
function bound(map: Map<string, unknown>): void {
  while (map.size > MAX_TRACKED_NAMES) {
    const oldest = map.keys().next().value
    if (oldest === undefined) return
    map.delete(oldest)
  }
}

/**
 * A sliding count of failures per name (an account, a source, or an account
 * from one source) within `windowMs`, plus the attempts still being checked:
 * a burst of guesses sent at once is held to `max` like guesses sent one by
 * one. The last `keep` failures are kept (at least `max`).
 */
class FailureLog {
  private readonly failures = new Map<string, number[]>()
  private readonly inFlight = new Map<string, number>()

  constructor(
    private readonly max: number,
    private readonly windowMs: number,
    private readonly keep = max,
  ) {}

  private recent(name: string, now: number): number[] {
    const list = (this.failures.get(name) ?? []).filter((t) => t > now - this.windowMs)
    if (list.length) this.failures.set(name, list)
    else this.failures.delete(name)
    return list
  }

  /** Failures within the window plus attempts in flight. */
  count(name: string, now = Date.now()): number {
    return this.recent(name, now).length + (this.inFlight.get(name) ?? 0)
  }

  /** Ms until `name` may try again (failures and attempts in flight count), or 0. */
  blockedFor(name: string, now = Date.now()): number {
    const list = this.recent(name, now)
    if (list.length + (this.inFlight.get(name) ?? 0) < this.max) return 0
    if (list.length < this.max) return 1000 // attempts in flight: their outcome decides
    return (list[list.length - this.max] as number) + this.windowMs - now
  }

  /** An attempt starts; call `done` with its outcome. */
  begin(name: string): void {
    this.inFlight.set(name, (this.inFlight.get(name) ?? 0) + 1)
  }

  /** An attempt ends; a failure is counted. A success clears nothing by itself (see `clear`). */
  done(name: string, failed: boolean, now = Date.now()): void {
    const n = (this.inFlight.get(name) ?? 1) - 1
    if (n > 0) this.inFlight.set(name, n)
    else this.inFlight.delete(name)
    if (!failed) return
    const list = this.recent(name, now)
    list.push(now)
    this.failures.delete(name) // re-inserted last: the oldest names are the ones forgotten
    this.failures.set(name, list.slice(-Math.max(this.keep, this.max)))
    bound(this.failures)
  }

  clear(name: string): void {
    this.failures.delete(name)
  }

  /** Forgets names whose failures all left the window. */
  sweep(now = Date.now()): void {
    for (const name of this.failures.keys()) this.recent(name, now)
  }
}

/** Doublings of the account backoff that can matter (2^16 × any sane base is past any sane cap). */
const MAX_BACKOFF_STEPS = 16

/** The key of an account as tried from one source (names never hold a newline). */
const pairOf = (username: string, source: string) => `${username}\n${source}`

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
  private secret: Buffer | string = ''
  private readonly users = new Map<string, UserRecord>()
  private readonly usersById = new Map<string, UserRecord>()
  private readonly keys = new Map<string, KeyRecord>()
  /** Logged-out access token ids, until they would have expired anyway. */
  private readonly revokedJtis = new Map<string, number>()
  private readonly cache = new Map<string, Cached>()
  /** Failures per account from every source: past the allowance, the account's checks are spaced. */
  private readonly accountFailures: FailureLog
  /** Failures per account from one source: past the allowance, that source is refused for that account. */
  private readonly pairFailures: FailureLog
  /** Failures per source across accounts: past the allowance, the source is refused for every account. */
  private readonly peerFailures: FailureLog
  /** Per account under backoff: when its next check may start (ms). */
  private readonly accountTurns = new Map<string, number>()
  /** Account and source pairs that signed in, until when: they skip the account's backoff. */
  private readonly trustedPairs = new Map<string, number>()
  private scryptRunning = 0
  private readonly scryptWaiters: Array<() => void> = []
  /** Writes that read before they write (refresh rotation, user updates) run one at a time. */
  private readonly serial = new Serial()
  private sweepTimer: NodeJS.Timeout | null = null
  /** Durations (ms) of recent real password checks, queue wait included, oldest first. */
  private readonly checkTimes: number[] = []
  /** One timed hash, for unknown names before any real check has been timed. */
  private calibration: Promise<void> | null = null

  constructor(opts: AuthFacilityOptions) {
    super()
    const { store, config, logger } = opts
    this.storeFacility = store
    this.config = config
    this.log = logger
    this.accountFailures = new FailureLog(
      config.maxFailuresPerAccount,
      config.lockMs,
      config.maxFailuresPerAccount + MAX_BACKOFF_STEPS,
    )
    this.pairFailures = new FailureLog(config.maxFailuresPerAccount, config.lockMs)
    this.peerFailures = new FailureLog(config.maxFailuresPerPeer, config.lockMs)
  }

  protected override async _open(): Promise<void> {
    const bee = await this.storeFacility.bee(AUTH_BEE)
    this.bee = bee
    if (this.config.jwtSecret) this.secret = this.config.jwtSecret
    else {
      const stored = await bee.get<string>(JWT_SECRET_KEY)
      if (stored && /^[0-9a-f]{64,}$/.test(stored.value)) this.secret = Buffer.from(stored.value, 'hex')
      else {
        const fresh = randomBytes(32)
        await bee.put(JWT_SECRET_KEY, fresh.toString('hex'))
        this.secret = fresh
      }
    }
    for await (const { value } of bee.createReadStream<UserRecord>({ gte: 'users/', lt: 'users0' })) {
      this.users.set(value.username, value)
      this.usersById.set(value.id, value)
    }
    for await (const { value } of bee.createReadStream<KeyRecord>({ gte: 'keys/', lt: 'keys0' })) {
      this.keys.set(value.id, value)
    }
    const now = Date.now()
    for await (const { key, value } of bee.createReadStream<number>({ gte: 'revoked/', lt: 'revoked0' })) {
      if (value > now) this.revokedJtis.set(key.slice('revoked/'.length), value)
      else await bee.del(key)
    }
    this.sweepTimer = setInterval(() => this.sweep(), SWEEP_INTERVAL_MS)
    this.sweepTimer.unref()
  }

  /** Forgets what has expired: logged-out tokens past their expiry, failures past the window. */
  private sweep(now = Date.now()): void {
    for (const [jti, expiresAt] of this.revokedJtis) {
      if (expiresAt > now) continue
      this.revokedJtis.delete(jti)
      this.bee?.del(`revoked/${jti}`).catch(() => {})
    }
    this.accountFailures.sweep(now)
    this.pairFailures.sweep(now)
    this.peerFailures.sweep(now)
    for (const [name, at] of this.accountTurns) if (at <= now) this.accountTurns.delete(name)
    for (const [pair, until] of this.trustedPairs) if (until <= now) this.trustedPairs.delete(pair)
  }

  protected override async _close(): Promise<void> {
    if (this.sweepTimer) clearInterval(this.sweepTimer)
    this.sweepTimer = null
    await this.serial.idle()
    this.bee = null
    this.cache.clear()
  }

  private get db(): Hyperbee {
    if (!this.bee) throw new MeshError('ERR_UNAVAILABLE', 'auth is closed')
    return this.bee
  }

  // ------------------------------------------------------------------ passwords

  private get scryptQueueFull(): boolean {
    return this.scryptWaiters.length >= MAX_SCRYPT_WAITING
  }

  private scryptBusy(): MeshError {
    return new MeshError('ERR_BUSY', 'too many password checks at once; retry shortly', {
      retryAfterMs: 1000,
    })
  }

  /** @throws ERR_BUSY (MAX_SCRYPT_WAITING hashes already wait) */
  private async withScryptSlot<T>(fn: () => Promise<T>): Promise<T> {
    if (this.scryptRunning >= MAX_CONCURRENT_SCRYPT && this.scryptQueueFull) throw this.scryptBusy()
    while (this.scryptRunning >= MAX_CONCURRENT_SCRYPT) {
      await new Promise<void>((resolve) => this.scryptWaiters.push(resolve))
    }
    this.scryptRunning++
    try {
      return await fn()
    } finally {
      this.scryptRunning--
      this.scryptWaiters.shift()?.()
    }
  }

  /** `scrypt$N$r$p$<salt b64>$<hash b64>` @throws ERR_BUSY */
  async hashPassword(password: string): Promise<string> {
    const { N, r, p } = this.config.scrypt
    const salt = randomBytes(SALT_BYTES)
    const hash = await this.withScryptSlot(() => scrypt(password, salt, N, r, p))
    return `scrypt$${N}$${r}$${p}$${salt.toString('base64')}$${hash.toString('base64')}`
  }

  /** @throws ERR_BUSY */
  async verifyPassword(password: string, stored: string): Promise<boolean> {
    const parts = stored.split('$')
    if (parts.length !== 6 || parts[0] !== 'scrypt') return false
    const [N, r, p] = parts.slice(1, 4).map(Number) as [number, number, number]
    const salt = Buffer.from(parts[4] as string, 'base64')
    const expected = Buffer.from(parts[5] as string, 'base64')
    const actual = await this.withScryptSlot(() =>
      scrypt(password, salt, N, r, p).catch((err) => {
        // A damaged hash (bad N, r or p) matches nothing; say so in the log, not to the caller.
        this.log.error({ err }, 'stored password hash is unusable')
        return null
      }),
    )
    return actual !== null && actual.length === expected.length && timingSafeEqual(actual, expected)
  }

  // ------------------------------------------------------------------ users

  get userCount(): number {
    return this.users.size
  }

  user(username: string): UserRecord | undefined {
    return this.users.get(username.toLowerCase())
  }

  userById(id: string): UserRecord | undefined {
    return this.usersById.get(id)
  }

  static publicUser(u: UserRecord): PublicUser {
    return {
      id: u.id,
      username: u.username,
      role: u.role,
      limits: u.limits,
      disabled: u.disabled,
      createdAt: u.createdAt,
    }
  }

  listUsers(): PublicUser[] {
    return [...this.users.values()]
      .map(AuthFacility.publicUser)
      .sort((a, b) => a.username.localeCompare(b.username))
  }

  private async saveUser(u: UserRecord): Promise<void> {
    await this.db.put(`users/${u.username}`, u)
    this.users.set(u.username, u)
    this.usersById.set(u.id, u)
  }

  /** @throws ERR_BAD_REQUEST (bad name, password or limits), ERR_CONFLICT (name taken) */
  async createUser(input: {
    username: unknown
    password: unknown
    role?: Role
    limits?: unknown
  }): Promise<PublicUser> {
    const username = validate(usernameSchema, input.username, 'username', 'ERR_BAD_REQUEST')
    const password = validate(passwordSchema, input.password, 'password', 'ERR_BAD_REQUEST')
    const limits = validate(userLimitOverridesSchema, input.limits ?? {}, 'limits', 'ERR_BAD_REQUEST')
    const role = input.role ?? 'user'
    const passwordHash = await this.hashPassword(password)
    return this.serial.run(async () => {
      if (this.users.has(username)) {
        throw new MeshError('ERR_CONFLICT', `user '${username}' already exists`, { username })
      }
      const at = nowIso()
      const u: UserRecord = {
        id: randomBytes(ID_BYTES).toString('hex'),
        username,
        role,
        passwordHash,
        limits,
        disabled: false,
        tokenVersion: 0,
        createdAt: at,
        updatedAt: at,
      }
      await this.saveUser(u)
      this.log.info({ user: username, role }, 'user created')
      return AuthFacility.publicUser(u)
    })
  }

  /**
   * Admin changes: role, limit overrides (null removes a limit, an absent field
   * keeps the default), disabled. Disabling ends every token and key at once.
   * @throws ERR_NOT_FOUND, ERR_BAD_REQUEST
   */
  async updateUser(
    username: string,
    changes: { role?: Role; limits?: unknown; disabled?: boolean; resetLimits?: boolean },
  ): Promise<PublicUser> {
    const limits =
      changes.limits === undefined
        ? undefined
        : validate(userLimitOverridesSchema, changes.limits, 'limits', 'ERR_BAD_REQUEST')
    return this.serial.run(async () => {
      const u = this.requireUser(username)
      const next: UserRecord = { ...u, updatedAt: nowIso() }
      if (changes.role) next.role = changes.role
      if (changes.resetLimits) next.limits = {}
      if (limits) next.limits = { ...next.limits, ...limits }
      if (changes.disabled !== undefined) next.disabled = changes.disabled
      // A disabled user or a changed role: tokens issued before say something no longer true.
      if (next.disabled !== u.disabled || next.role !== u.role) next.tokenVersion = u.tokenVersion + 1
      await this.saveUser(next)
      this.log.info({ user: u.username, changes: { ...changes, limits } }, 'user updated')
      return AuthFacility.publicUser(next)
    })
  }

  /**
   * Whether an identity is an API key with restrictions of its own (a model
   * list, or limits): such a key may not do what would shed them.
   */
  restricted(identity: Identity): boolean {
    if (!identity.keyId) return false
    const k = this.keys.get(identity.keyId)
    return identity.models !== null || Object.values(k?.limits ?? {}).some((v) => v !== undefined)
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
    if (this.restricted(identity)) {
      throw new MeshError(
        'ERR_FORBIDDEN',
        'a restricted API key cannot change the password: log in, or use an unrestricted key',
      )
    }
    const password = validate(passwordSchema, next, 'newPassword', 'ERR_BAD_REQUEST')
    const u = this.usersById.get(identity.userId)
    if (!u || typeof current !== 'string' || passwordLength(current) > MAX_PASSWORD) {
      throw new MeshError('ERR_AUTH_INVALID', 'the current password is wrong')
    }
    const credential = `credential:${identity.keyId ?? identity.jti ?? identity.userId}`
    if (!(await this.checkPassword(u.username, current, [source, credential], false))) {
      this.log.warn({ user: u.username, peer: source }, 'password change refused: wrong current password')
      throw new MeshError('ERR_AUTH_INVALID', 'the current password is wrong')
    }
    await this.replacePassword(u.username, password)
    this.log.info({ user: u.username }, 'password changed')
  }

  /** Admin reset of a user's password; ends the user's sessions. @throws ERR_NOT_FOUND, ERR_BAD_REQUEST */
  async setPassword(username: string, next: unknown): Promise<void> {
    const password = validate(passwordSchema, next, 'password', 'ERR_BAD_REQUEST')
    this.requireUser(username)
    await this.replacePassword(username, password)
    this.log.info({ user: username }, 'password reset')
  }

  /** Stores a new password hash and ends the user's sessions (a new token version). */
  private async replacePassword(username: string, password: string): Promise<void> {
    const passwordHash = await this.hashPassword(password)
    await this.serial.run(async () => {
      const latest = this.requireUser(username)
      await this.saveUser({
        ...latest,
        passwordHash,
        tokenVersion: latest.tokenVersion + 1,
        updatedAt: nowIso(),
      })
    })
  }

  private requireUser(username: string): UserRecord {
    const u = this.users.get(String(username).toLowerCase())
    if (!u) throw new MeshError('ERR_NOT_FOUND', `no user '${username}'`, { username })
    return u
  }

  // ------------------------------------------------------------------ login and tokens

  /**
   * Checks a password and issues tokens, under the brute-force limits of
   * `checkPassword`. `source` is the caller's RPC public key (hex).
   * @throws ERR_AUTH_INVALID, ERR_RATE_LIMITED (too many failures), ERR_BUSY,
   *   ERR_FORBIDDEN (disabled), ERR_BAD_REQUEST
   */
  async login(usernameInput: unknown, password: unknown, source: string): Promise<TokenPair> {
    if (
      typeof usernameInput !== 'string' ||
      typeof password !== 'string' ||
      passwordLength(password) > MAX_PASSWORD
    ) {
      throw MeshError.badRequest(
        `username and password are required strings (a password of at most ${MAX_PASSWORD} characters)`,
      )
    }
    // A name no account can have is simply wrong: never tracked, logged or hashed against.
    if (!USERNAME_RE.test(usernameInput))
      throw new MeshError('ERR_AUTH_INVALID', 'wrong username or password')
    const username = usernameInput.toLowerCase()
    const pair = pairOf(username, source)
    const trusted = (this.trustedPairs.get(pair) ?? 0) > Date.now()
    if (!(await this.checkPassword(username, password, [source], trusted))) {
      this.log.warn({ user: username, peer: source }, 'login failed')
      throw new MeshError('ERR_AUTH_INVALID', 'wrong username or password')
    }
    const user = this.users.get(username)
    if (!user) throw new MeshError('ERR_AUTH_INVALID', 'wrong username or password')
    if (user.disabled) throw new MeshError('ERR_FORBIDDEN', `user '${username}' is disabled`)
    this.trustedPairs.delete(pair) // re-inserted last: the oldest pairs are the ones forgotten
    this.trustedPairs.set(pair, Date.now() + this.config.refreshTtlSec * 1000)
    bound(this.trustedPairs)
    return this.issueTokens(user, randomBytes(ID_BYTES).toString('hex'))
  }

  /**
   * Checks `password` for account `username` as tried from `sources` (the
   * caller's peer; for a password change also its credential), under the
   * limits in docs/auth.md: a source past its failures, for every account or
   * for this one, is refused unchecked; an account past its failures from all
   * sources has its checks spaced out (`takeAccountTurn`), except for a source
   * that signed in to it before (`trusted`). An unknown name goes through the
   * same bookkeeping but costs no hash: it waits as long as a real check takes,
   * on a timer, outside the hash queue, and fails.
   * @returns whether the password is right
   * @throws ERR_RATE_LIMITED, ERR_BUSY (the hash queue is full, for every name alike)
   */
  private async checkPassword(
    username: string,
    password: string,
    sources: string[],
    trusted: boolean,
  ): Promise<boolean> {
    const now = Date.now()
    for (const source of sources) {
      const wait = this.peerFailures.blockedFor(source, now)
      if (wait > 0) throw this.tooManyFailures('this peer', wait)
    }
    for (const source of sources) {
      const wait = this.pairFailures.blockedFor(pairOf(username, source), now)
      if (wait > 0) throw this.tooManyFailures(`account '${username}' from this peer`, wait)
    }
    const turn = trusted ? 0 : this.takeAccountTurn(username, now)
    // Counted before the (slow) check, in the same step as the tests above.
    this.accountFailures.begin(username)
    for (const source of sources) {
      this.peerFailures.begin(source)
      this.pairFailures.begin(pairOf(username, source))
    }
    let outcome: 'right' | 'wrong' | 'unchecked' = 'unchecked'
    try {
      if (turn > 0) await sleep(turn)
      if (this.scryptQueueFull) throw this.scryptBusy()
      const u = this.users.get(username)
      const right = u ? await this.timedVerify(password, u.passwordHash) : await this.unknownNameDelay()
      outcome = right ? 'right' : 'wrong'
      return right
    } finally {
      const failed = outcome === 'wrong'
      this.accountFailures.done(username, failed)
      for (const source of sources) {
        this.peerFailures.done(source, failed)
        this.pairFailures.done(pairOf(username, source), failed)
        if (outcome === 'right') this.pairFailures.clear(pairOf(username, source))
      }
    }
  }

  /**
   * Ms a check of `username` must wait for its turn, reserving it. None while
   * the account has fewer than `maxFailuresPerAccount` failures (and attempts
   * in flight) from all sources; past that, checks are spaced `accountBackoffMs`
   * apart, doubling with each further failure up to `maxAccountBackoffMs`, and a
   * turn further away than that is refused. Fresh sources (free to make) thus
   * get a few guesses per spacing, while the owner waits at most the spacing.
   * @throws ERR_RATE_LIMITED
   */
  private takeAccountTurn(username: string, now: number): number {
    const { maxFailuresPerAccount, accountBackoffMs, maxAccountBackoffMs } = this.config
    const excess = this.accountFailures.count(username, now) - maxFailuresPerAccount
    if (excess < 0) return 0
    const spacing = Math.min(accountBackoffMs * 2 ** Math.min(excess, MAX_BACKOFF_STEPS), maxAccountBackoffMs)
    const turn = Math.max(now, this.accountTurns.get(username) ?? 0)
    if (turn - now > maxAccountBackoffMs) throw this.tooManyFailures(`account '${username}'`, turn - now)
    this.accountTurns.delete(username) // re-inserted last: the oldest names are the ones forgotten
    this.accountTurns.set(username, turn + spacing)
    bound(this.accountTurns)
    return turn - now
  }

  /** A real check, timed (queue wait included) for `unknownNameDelay`. */
  private async timedVerify(password: string, hash: string): Promise<boolean> {
    const started = performance.now()
    const right = await this.verifyPassword(password, hash)
    this.recordCheckTime(performance.now() - started)
    return right
  }

  private recordCheckTime(ms: number): void {
    this.checkTimes.push(ms)
    if (this.checkTimes.length > CHECK_TIME_SAMPLES) this.checkTimes.shift()
  }

  /**
   * Waits as long as one of the recent real checks took, drawn at random: a
   * timer, no CPU and no place in the hash queue, so a flood of unknown names
   * costs nothing and timing still does not tell which names exist. Before any
   * real check, one hash is timed (once).
   */
  private async unknownNameDelay(): Promise<false> {
    if (this.checkTimes.length === 0) {
      this.calibration ??= (async () => {
        const started = performance.now()
        await this.hashPassword(randomBytes(16).toString('hex'))
        this.recordCheckTime(performance.now() - started)
      })().catch(() => {
        this.calibration = null
      })
      await this.calibration
    }
    const ms = this.checkTimes.length ? (this.checkTimes[randomInt(this.checkTimes.length)] as number) : 0
    await sleep(ms)
    return false
  }

  private tooManyFailures(who: string, waitMs: number): MeshError {
    return new MeshError(
      'ERR_RATE_LIMITED',
      `too many failed logins for ${who}; retry in ${Math.ceil(waitMs / 1000)} s`,
      {
        limit: 'login',
        retryAfterMs: Math.ceil(waitMs),
      },
    )
  }

  private async issueTokens(u: UserRecord, family: string): Promise<TokenPair> {
    const jti = randomBytes(ID_BYTES).toString('hex')
    const accessToken = jwt.sign(
      { name: u.username, role: u.role, ver: u.tokenVersion, typ: 'access' },
      this.secret,
      {
        algorithm: JWT_ALGORITHM,
        subject: u.id,
        issuer: this.config.issuer,
        audience: this.config.audience,
        expiresIn: this.config.accessTtlSec,
        jwtid: jti,
      },
    )
    const refresh = makeOpaque(REFRESH_PREFIX)
    const rec: RefreshRecord = {
      userId: u.id,
      family,
      hash: refresh.hash,
      tokenVersion: u.tokenVersion,
      expiresAt: Date.now() + this.config.refreshTtlSec * 1000,
      rotatedAt: null,
    }
    await this.db.put(`refresh/${refresh.id}`, rec)
    return {
      tokenType: 'Bearer',
      accessToken,
      expiresIn: this.config.accessTtlSec,
      refreshToken: refresh.token,
      refreshExpiresIn: this.config.refreshTtlSec,
      user: AuthFacility.publicUser(u),
    }
  }

  /**
   * Trades a refresh token for a new pair; the old one stops working (rotation).
   * Presenting an already rotated token revokes its whole family: someone else
   * has a copy.
   * @throws ERR_AUTH_INVALID
   */
  refresh(token: unknown): Promise<TokenPair> {
    const parsed = typeof token === 'string' ? parseOpaque(token, REFRESH_PREFIX) : null
    if (!parsed) return Promise.reject(new MeshError('ERR_AUTH_INVALID', 'malformed refresh token'))
    return this.serial.run(async () => {
      const entry = await this.db.get<RefreshRecord>(`refresh/${parsed.id}`)
      const rec = entry?.value
      if (!rec || !opaqueMatches(parsed, rec.hash)) {
        throw new MeshError('ERR_AUTH_INVALID', 'unknown refresh token')
      }
      if (await this.familyRevoked(rec.family))
        throw new MeshError('ERR_AUTH_INVALID', 'refresh token revoked')
      if (rec.rotatedAt !== null) {
        await this.db.put(`families/${rec.family}`, { revokedAt: Date.now(), reason: 'reuse' })
        this.log.warn({ userId: rec.userId, family: rec.family }, 'refresh token reused: family revoked')
        throw new MeshError('ERR_AUTH_INVALID', 'refresh token already used; its sessions are revoked')
      }
      if (rec.expiresAt <= Date.now()) throw new MeshError('ERR_AUTH_INVALID', 'refresh token expired')
      const u = this.usersById.get(rec.userId)
      if (!u || u.disabled || u.tokenVersion !== rec.tokenVersion) {
        throw new MeshError('ERR_AUTH_INVALID', 'refresh token no longer valid')
      }
      await this.db.put(`refresh/${parsed.id}`, { ...rec, rotatedAt: Date.now() })
      return this.issueTokens(u, rec.family)
    })
  }

  private async familyRevoked(family: string): Promise<boolean> {
    return (await this.db.get(`families/${family}`)) !== null
  }

  /** Ends a session: the access token now, and the refresh token's family if given. */
  async logout(identity: Identity, refreshToken?: unknown): Promise<void> {
    if (identity.jti && identity.expiresAt) {
      this.revokedJtis.set(identity.jti, identity.expiresAt)
      await this.db.put(`revoked/${identity.jti}`, identity.expiresAt)
    }
    const parsed = typeof refreshToken === 'string' ? parseOpaque(refreshToken, REFRESH_PREFIX) : null
    if (!parsed) return
    const entry = await this.db.get<RefreshRecord>(`refresh/${parsed.id}`)
    const rec = entry?.value
    if (rec && rec.userId === identity.userId && opaqueMatches(parsed, rec.hash)) {
      await this.db.put(`families/${rec.family}`, { revokedAt: Date.now(), reason: 'logout' })
    }
  }

  /**
   * Who a bearer credential (API key or access JWT) belongs to. Whitespace
   * around it is ignored, over RPC as over HTTP (where a header's is anyway):
   * no credential holds any.
   * @throws ERR_AUTH_REQUIRED (none given), ERR_AUTH_INVALID (anything wrong with it)
   */
  authenticate(input: unknown, now = Date.now()): Identity {
    if (typeof input === 'string' && input.length > 4096)
      throw new MeshError('ERR_AUTH_INVALID', 'malformed credential')
    const token = typeof input === 'string' ? input.trim() : input
    if (token === undefined || token === null || token === '') {
      throw new MeshError('ERR_AUTH_REQUIRED', 'this method needs an API key or access token (auth)')
    }
    if (typeof token !== 'string') throw new MeshError('ERR_AUTH_INVALID', 'malformed credential')
    const cached = this.cache.get(token)
    if (cached) return this.recheck(cached, now)
    const fresh = token.startsWith(`${API_KEY_PREFIX}_`) ? this.verifyKey(token) : this.verifyJwt(token)
    if (this.cache.size >= this.config.cacheSize) {
      // Drop the oldest entry (Map keeps insertion order).
      const oldest = this.cache.keys().next().value
      if (oldest !== undefined) this.cache.delete(oldest)
    }
    this.cache.set(token, fresh)
    return this.recheck(fresh, now)
  }

  /** What may have changed since a credential was verified: revocation, disable, expiry. */
  private recheck(c: Cached, now: number): Identity {
    const id = c.identity
    if (id.expiresAt !== null && id.expiresAt <= now) {
      throw new MeshError('ERR_AUTH_INVALID', id.keyId ? 'API key expired' : 'access token expired', {
        reason: 'expired',
      })
    }
    const u = this.usersById.get(id.userId)
    if (!u || u.disabled) throw new MeshError('ERR_AUTH_INVALID', 'user is disabled or gone')
    if (id.keyId) {
      const k = this.keys.get(id.keyId)
      if (!k || k.revokedAt) throw new MeshError('ERR_AUTH_INVALID', 'API key revoked')
      return id.role === u.role ? id : { ...id, role: u.role }
    }
    if (u.tokenVersion !== c.ver) throw new MeshError('ERR_AUTH_INVALID', 'access token no longer valid')
    if (id.jti && this.revokedJtis.has(id.jti))
      throw new MeshError('ERR_AUTH_INVALID', 'access token revoked')
    return id
  }

  private verifyKey(token: string): Cached {
    const parsed = parseOpaque(token, API_KEY_PREFIX)
    const k = parsed ? this.keys.get(parsed.id) : undefined
    if (!parsed || !k || !opaqueMatches(parsed, k.hash)) {
      throw new MeshError('ERR_AUTH_INVALID', 'unknown API key')
    }
    const u = this.usersById.get(k.userId)
    if (!u) throw new MeshError('ERR_AUTH_INVALID', 'unknown API key')
    return {
      identity: {
        userId: u.id,
        username: u.username,
        role: u.role,
        keyId: k.id,
        models: k.models,
        jti: null,
        expiresAt: k.expiresAt ? Date.parse(k.expiresAt) : null,
      },
      ver: u.tokenVersion,
    }
  }

  private verifyJwt(token: string): Cached {
    let claims: AccessClaims
    try {
      claims = jwt.verify(token, this.secret, {
        algorithms: [JWT_ALGORITHM],
        issuer: this.config.issuer,
        audience: this.config.audience,
      }) as AccessClaims
    } catch (err) {
      const expired = (err as Error).name === 'TokenExpiredError'
      throw new MeshError('ERR_AUTH_INVALID', expired ? 'access token expired' : 'invalid access token', {
        reason: expired ? 'expired' : 'invalid',
      })
    }
    // jsonwebtoken accepts a token without `exp`, which would then be good forever.
    if (
      claims.typ !== 'access' ||
      typeof claims.sub !== 'string' ||
      typeof claims.jti !== 'string' ||
      typeof claims.exp !== 'number'
    ) {
      throw new MeshError('ERR_AUTH_INVALID', 'invalid access token', { reason: 'invalid' })
    }
    const u = this.usersById.get(claims.sub)
    if (!u) throw new MeshError('ERR_AUTH_INVALID', 'invalid access token', { reason: 'invalid' })
    return {
      identity: {
        userId: u.id,
        username: u.username,
        role: claims.role === 'admin' && u.role === 'admin' ? 'admin' : 'user',
        keyId: null,
        models: null,
        jti: claims.jti,
        expiresAt: claims.exp * 1000,
      },
      ver: claims.ver,
    }
  }

  // ------------------------------------------------------------------ API keys

  static publicKey(k: KeyRecord): PublicKey {
    return {
      id: k.id,
      userId: k.userId,
      name: k.name,
      prefix: `${API_KEY_PREFIX}_${k.id}_…`,
      createdAt: k.createdAt,
      expiresAt: k.expiresAt,
      models: k.models,
      limits: k.limits,
      revokedAt: k.revokedAt,
    }
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
  async createKey(
    userId: string,
    input: { name?: unknown; expiresInDays?: unknown; models?: unknown; limits?: unknown },
    madeWith?: Identity,
  ): Promise<{ key: string } & PublicKey> {
    const spec = validate(
      keySpecSchema,
      {
        name: input.name,
        ...(input.expiresInDays !== undefined ? { expiresInDays: input.expiresInDays } : {}),
        ...(input.models !== undefined ? { models: input.models } : {}),
        ...(input.limits !== undefined ? { limits: input.limits } : {}),
      },
      'key',
      'ERR_BAD_REQUEST',
    )
    if (!this.usersById.has(userId)) throw new MeshError('ERR_NOT_FOUND', 'no such user')
    const asked = spec.expiresInDays ? Date.now() + spec.expiresInDays * 86_400_000 : null
    const parent = madeWith?.keyId ? madeWith.expiresAt : null
    const expiresAt = asked === null ? parent : parent === null ? asked : Math.min(asked, parent)
    const made = makeOpaque(API_KEY_PREFIX)
    const k: KeyRecord = {
      id: made.id,
      userId,
      hash: made.hash,
      name: spec.name,
      createdAt: nowIso(),
      expiresAt: expiresAt === null ? null : new Date(expiresAt).toISOString(),
      models: spec.models ? [...new Set(spec.models.map(baseModel))] : null,
      limits: spec.limits ?? {},
      revokedAt: null,
    }
    await this.db.put(`keys/${k.id}`, k)
    this.keys.set(k.id, k)
    this.log.info({ userId, key: k.id, name: k.name }, 'API key created')
    return { key: made.token, ...AuthFacility.publicKey(k) }
  }

  listKeys(userId?: string): PublicKey[] {
    return [...this.keys.values()]
      .filter((k) => userId === undefined || k.userId === userId)
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt))
      .map(AuthFacility.publicKey)
  }

  /** @throws ERR_NOT_FOUND (also for a key of another user, unless `asAdmin`) */
  async revokeKey(id: unknown, userId: string, asAdmin = false): Promise<PublicKey> {
    const k = typeof id === 'string' ? this.keys.get(id) : undefined
    if (!k || (!asAdmin && k.userId !== userId))
      throw new MeshError('ERR_NOT_FOUND', `no API key '${String(id)}'`)
    if (k.revokedAt) return AuthFacility.publicKey(k)
    const next = { ...k, revokedAt: nowIso() }
    await this.db.put(`keys/${k.id}`, next)
    this.keys.set(k.id, next)
    this.log.info({ key: k.id }, 'API key revoked')
    return AuthFacility.publicKey(next)
  }
}
