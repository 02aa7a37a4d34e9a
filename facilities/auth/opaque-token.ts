import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'

/** Opaque tokens (API keys, refresh tokens): `<prefix>_<16 hex id>_<secret>`, stored as the secret's SHA-256. */

const ID_BYTES = 8
const SECRET_BYTES = 24

/** A new random id (16 hex): users, access token ids, refresh families, opaque token ids. */
export const newId = (): string => randomBytes(ID_BYTES).toString('hex')

const sha256 = (s: string) => createHash('sha256').update(s).digest()

/** The shape of each opaque token prefix, compiled once (API keys are parsed on every request). */
const opaqueShapes = new Map<string, RegExp>()

export interface ParsedOpaque {
  id: string
  secret: string
}

/** Parses `<prefix>_<16 hex id>_<secret>`; null when it is not that shape (or not a string). */
export function parseOpaque(token: unknown, prefix: string): ParsedOpaque | null {
  if (typeof token !== 'string') return null
  let shape = opaqueShapes.get(prefix)
  if (!shape) {
    shape = new RegExp(`^${prefix}_([0-9a-f]{${ID_BYTES * 2}})_([A-Za-z0-9_-]{20,64})$`)
    opaqueShapes.set(prefix, shape)
  }
  const m = shape.exec(token)
  return m ? { id: m[1] as string, secret: m[2] as string } : null
}

/** A new opaque token, and the hash of its secret (all that is stored). */
export function makeOpaque(prefix: string): { id: string; token: string; hash: string } {
  const id = newId()
  const secret = randomBytes(SECRET_BYTES).toString('base64url')
  return { id, token: `${prefix}_${id}_${secret}`, hash: sha256(secret).toString('hex') }
}

/** Whether a parsed token's secret is the one whose hash was stored (constant time). */
export function opaqueMatches(parsed: ParsedOpaque, hash: string): boolean {
  const a = sha256(parsed.secret)
  const b = Buffer.from(hash, 'hex')
  return a.length === b.length && timingSafeEqual(a, b)
}
