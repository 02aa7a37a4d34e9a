import type { Role } from '../../kernel/accounts.js'

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

/** A credential as verified once, kept in the cache and rechecked on every use. */
export interface Verified {
  identity: Identity
  /** For JWTs: the token version it was issued under. */
  ver: number
}
