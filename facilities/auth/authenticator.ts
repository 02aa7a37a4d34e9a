import { MeshError } from '../../kernel/errors.js'
import { API_KEY_PREFIX, type ApiKeys } from './api-keys.js'
import { setNewest } from './bounded-map.js'
import type { Identity, Verified } from './identity.js'
import type { Tokens } from './tokens.js'
import type { Users } from './users.js'

/** Longer than any credential we issue: refused before any parsing. */
const MAX_CREDENTIAL = 4096

/**
 * Who a bearer credential belongs to. A credential is verified once (an API
 * key one SHA-256, a JWT one HMAC) and cached; every use then rechecks what
 * may have changed since (user disabled, token version, key revoked, access
 * token logged out, expiry) from memory, so a request costs no I/O.
 */
export class Authenticator {
  private readonly cache = new Map<string, Verified>()

  constructor(
    private readonly users: Users,
    private readonly keys: ApiKeys,
    private readonly tokens: Tokens,
    private readonly cacheSize: number,
  ) {}

  /**
   * Whitespace around the credential is ignored, over RPC as over HTTP (where a
   * header's is anyway): no credential holds any.
   * @throws ERR_AUTH_REQUIRED (none given), ERR_AUTH_INVALID (anything wrong with it)
   */
  authenticate(input: unknown, now: number): Identity {
    if (typeof input === 'string' && input.length > MAX_CREDENTIAL)
      throw new MeshError('ERR_AUTH_INVALID', 'malformed credential')
    const token = typeof input === 'string' ? input.trim() : input
    if (token === undefined || token === null || token === '') {
      throw new MeshError('ERR_AUTH_REQUIRED', 'this method needs an API key or access token (auth)')
    }
    if (typeof token !== 'string') throw new MeshError('ERR_AUTH_INVALID', 'malformed credential')
    const cached = this.cache.get(token)
    if (cached) return this.recheck(cached, now)
    const fresh = token.startsWith(`${API_KEY_PREFIX}_`) ? this.keys.verify(token) : this.tokens.verify(token)
    setNewest(this.cache, token, fresh, this.cacheSize)
    return this.recheck(fresh, now)
  }

  /** What may have changed since a credential was verified: revocation, disable, expiry. */
  private recheck(c: Verified, now: number): Identity {
    const id = c.identity
    if (id.expiresAt !== null && id.expiresAt <= now) {
      throw new MeshError('ERR_AUTH_INVALID', id.keyId ? 'API key expired' : 'access token expired', {
        reason: 'expired',
      })
    }
    const u = this.users.getById(id.userId)
    if (!u || u.disabled) throw new MeshError('ERR_AUTH_INVALID', 'user is disabled or gone')
    if (id.keyId) {
      const k = this.keys.get(id.keyId)
      if (!k || k.revokedAt) throw new MeshError('ERR_AUTH_INVALID', 'API key revoked')
      return id.role === u.role ? id : { ...id, role: u.role }
    }
    if (u.tokenVersion !== c.ver) throw new MeshError('ERR_AUTH_INVALID', 'access token no longer valid')
    if (id.jti && this.tokens.isRevoked(id.jti))
      throw new MeshError('ERR_AUTH_INVALID', 'access token revoked')
    return id
  }

  clear(): void {
    this.cache.clear()
  }
}
