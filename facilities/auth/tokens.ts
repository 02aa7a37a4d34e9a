import { randomBytes } from 'node:crypto'
import type Hyperbee from 'hyperbee'
import jwt from 'jsonwebtoken'
import type { Role, TokenPair } from '../../kernel/accounts.js'
import type { AuthConfig } from '../../kernel/config.js'
import { MeshError } from '../../kernel/errors.js'
import type { Serial } from '../lib/serial.js'
import type { Logger } from '../log.facility.js'
import type { Identity, Verified } from './identity.js'
import { makeOpaque, newId, opaqueMatches, parseOpaque } from './opaque-token.js'
import { publicUser, type UserRecord, type Users } from './users.js'

export const REFRESH_PREFIX = 'lmr'
const JWT_SECRET_KEY = 'config/jwt-secret'
const JWT_ALGORITHM = 'HS256'

interface RefreshRecord {
  userId: string
  family: string
  hash: string
  tokenVersion: number
  expiresAt: number
  rotatedAt: number | null
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

type TokenConfig = Pick<AuthConfig, 'jwtSecret' | 'issuer' | 'audience' | 'accessTtlSec' | 'refreshTtlSec'>

export interface TokensOptions {
  db: () => Hyperbee
  users: Users
  serial: Serial
  config: TokenConfig
  log: Logger
}

/**
 * Sessions: HS256 access JWTs (algorithm pinned on verify; issuer, audience
 * and expiry checked) and opaque refresh tokens in families, rotated on use
 * (`refresh/<id>`, `families/<id>`, `revoked/<jti>` in the auth bee).
 */
export class Tokens {
  private secret: Buffer | string = ''
  /** Logged-out access token ids, until they would have expired anyway. */
  private readonly revokedJtis = new Map<string, number>()

  constructor(private readonly opts: TokensOptions) {}

  /** Loads the signing secret (made and stored on first open) and the logged-out token ids. */
  async load(bee: Hyperbee): Promise<void> {
    if (this.opts.config.jwtSecret) this.secret = this.opts.config.jwtSecret
    else {
      const stored = await bee.get<string>(JWT_SECRET_KEY)
      if (stored && /^[0-9a-f]{64,}$/.test(stored.value)) this.secret = Buffer.from(stored.value, 'hex')
      else {
        const fresh = randomBytes(32)
        await bee.put(JWT_SECRET_KEY, fresh.toString('hex'))
        this.secret = fresh
      }
    }
  }

  /** Loads the logged-out token ids still unexpired, deleting the rest. */
  async loadRevoked(bee: Hyperbee): Promise<void> {
    const now = Date.now()
    for await (const { key, value } of bee.createReadStream<number>({ gte: 'revoked/', lt: 'revoked0' })) {
      if (value > now) this.revokedJtis.set(key.slice('revoked/'.length), value)
      else await bee.del(key)
    }
  }

  /** Forgets logged-out tokens past their expiry. */
  sweep(now = Date.now()): void {
    for (const [jti, expiresAt] of this.revokedJtis) {
      if (expiresAt > now) continue
      this.revokedJtis.delete(jti)
      this.opts
        .db()
        .del(`revoked/${jti}`)
        .catch(() => {})
    }
  }

  isRevoked(jti: string): boolean {
    return this.revokedJtis.has(jti)
  }

  /** A new access and refresh token for `u`; a new session unless `family` continues one. */
  async issue(u: UserRecord, family = newId()): Promise<TokenPair> {
    const { config } = this.opts
    const accessToken = jwt.sign(
      { name: u.username, role: u.role, ver: u.tokenVersion, typ: 'access' },
      this.secret,
      {
        algorithm: JWT_ALGORITHM,
        subject: u.id,
        issuer: config.issuer,
        audience: config.audience,
        expiresIn: config.accessTtlSec,
        jwtid: newId(),
      },
    )
    const refresh = makeOpaque(REFRESH_PREFIX)
    const rec: RefreshRecord = {
      userId: u.id,
      family,
      hash: refresh.hash,
      tokenVersion: u.tokenVersion,
      expiresAt: Date.now() + config.refreshTtlSec * 1000,
      rotatedAt: null,
    }
    await this.opts.db().put(`refresh/${refresh.id}`, rec)
    return {
      tokenType: 'Bearer',
      accessToken,
      expiresIn: config.accessTtlSec,
      refreshToken: refresh.token,
      refreshExpiresIn: config.refreshTtlSec,
      user: publicUser(u),
    }
  }

  /** The stored record of a refresh token whose secret matches, or null. */
  private async findRefresh(token: unknown): Promise<{ id: string; rec: RefreshRecord } | null> {
    const parsed = parseOpaque(token, REFRESH_PREFIX)
    if (!parsed) return null
    const rec = (await this.opts.db().get<RefreshRecord>(`refresh/${parsed.id}`))?.value
    return rec && opaqueMatches(parsed, rec.hash) ? { id: parsed.id, rec } : null
  }

  private async revokeFamily(family: string, reason: 'reuse' | 'logout'): Promise<void> {
    await this.opts.db().put(`families/${family}`, { revokedAt: Date.now(), reason })
  }

  /**
   * Trades a refresh token for a new pair; the old one stops working (rotation).
   * Presenting an already rotated token revokes its whole family: someone else
   * has a copy.
   * @throws ERR_AUTH_INVALID
   */
  refresh(token: unknown): Promise<TokenPair> {
    if (!parseOpaque(token, REFRESH_PREFIX)) {
      return Promise.reject(new MeshError('ERR_AUTH_INVALID', 'malformed refresh token'))
    }
    return this.opts.serial.run(async () => {
      const found = await this.findRefresh(token)
      if (!found) throw new MeshError('ERR_AUTH_INVALID', 'unknown refresh token')
      const { id, rec } = found
      if ((await this.opts.db().get(`families/${rec.family}`)) !== null) {
        throw new MeshError('ERR_AUTH_INVALID', 'refresh token revoked')
      }
      if (rec.rotatedAt !== null) {
        await this.revokeFamily(rec.family, 'reuse')
        this.opts.log.warn({ userId: rec.userId, family: rec.family }, 'refresh token reused: family revoked')
        throw new MeshError('ERR_AUTH_INVALID', 'refresh token already used; its sessions are revoked')
      }
      if (rec.expiresAt <= Date.now()) throw new MeshError('ERR_AUTH_INVALID', 'refresh token expired')
      const u = this.opts.users.getById(rec.userId)
      if (!u || u.disabled || u.tokenVersion !== rec.tokenVersion) {
        throw new MeshError('ERR_AUTH_INVALID', 'refresh token no longer valid')
      }
      await this.opts.db().put(`refresh/${id}`, { ...rec, rotatedAt: Date.now() })
      return this.issue(u, rec.family)
    })
  }

  /** Ends a session: the access token now, and the refresh token's family if given. */
  async logout(identity: Identity, refreshToken?: unknown): Promise<void> {
    if (identity.jti && identity.expiresAt) {
      this.revokedJtis.set(identity.jti, identity.expiresAt)
      await this.opts.db().put(`revoked/${identity.jti}`, identity.expiresAt)
    }
    const found = await this.findRefresh(refreshToken)
    if (found && found.rec.userId === identity.userId) await this.revokeFamily(found.rec.family, 'logout')
  }

  /** The identity of an access JWT. @throws ERR_AUTH_INVALID (`details.reason` 'expired' or 'invalid') */
  verify(token: string): Verified {
    const claims = this.claimsOf(token)
    const u = this.opts.users.getById(claims.sub)
    if (!u) throw invalidToken()
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

  private claimsOf(token: string): AccessClaims {
    let claims: unknown
    try {
      claims = jwt.verify(token, this.secret, {
        algorithms: [JWT_ALGORITHM],
        issuer: this.opts.config.issuer,
        audience: this.opts.config.audience,
      })
    } catch (err) {
      const expired = err instanceof Error && err.name === 'TokenExpiredError'
      throw new MeshError('ERR_AUTH_INVALID', expired ? 'access token expired' : 'invalid access token', {
        reason: expired ? 'expired' : 'invalid',
      })
    }
    // jsonwebtoken accepts a token without `exp`, which would then be good forever.
    if (!isAccessClaims(claims)) throw invalidToken()
    return claims
  }
}

function isAccessClaims(c: unknown): c is AccessClaims {
  if (typeof c !== 'object' || c === null) return false
  const o: Partial<Record<keyof AccessClaims, unknown>> = c
  return (
    o.typ === 'access' && typeof o.sub === 'string' && typeof o.jti === 'string' && typeof o.exp === 'number'
  )
}

const invalidToken = () => new MeshError('ERR_AUTH_INVALID', 'invalid access token', { reason: 'invalid' })
