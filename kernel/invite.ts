import { z } from 'zod'
import { MeshError } from './errors.js'
import { HEX32 } from './util.js'

/**
 * An invite token: what a new machine needs to join a mesh in one command. `lmi1.` and the
 * base64url of a JSON object: the mesh name, the DHT bootstrap to use, the keys of the
 * gateways to trust (and to redeem the invite with), the role it is for, and the join
 * credential (id and secret; the gateway keeps only the secret's SHA-256). Whoever holds the
 * token can join until it expires or is revoked: keep it like a password.
 */

export const INVITE_PREFIX = 'lmi1.'
export const INVITE_ROLES = ['processor', 'gateway'] as const
export type InviteRole = (typeof INVITE_ROLES)[number]

/** Longest token accepted: a few gateways and bootstrap nodes fit many times over. */
const MAX_TOKEN_CHARS = 8_192

const hexKey = z.string().regex(HEX32, '64 lowercase hex characters')
const hostPort = z.string().regex(/^[^\s,]+:\d{1,5}$/, 'host:port')

export const inviteSchema = z
  .object({
    v: z.literal(1),
    mesh: z.string().regex(/^[a-zA-Z0-9._-]{1,64}$/, 'a mesh name'),
    bootstrap: z.union([z.literal('public'), z.array(hostPort).min(1).max(64)]),
    gateways: z.array(hexKey).min(1).max(256),
    /** Blind relays for peers hole-punching cannot reach (config `net.relays`); absent: none. */
    relays: z.array(hexKey).max(16).optional(),
    role: z.enum(INVITE_ROLES),
    id: z.string().regex(/^[0-9a-f]{16}$/, '16 hex characters'),
    secret: z.string().regex(/^[A-Za-z0-9_-]{20,64}$/, 'base64url, 20-64 characters'),
  })
  .strict()

export type Invite = z.infer<typeof inviteSchema>

/** Gateways one gateway may admit by invite, and one processor may take vouched for by one gateway. */
export const MAX_GATEWAY_MEMBERS = 1_024

export function encodeInvite(invite: Invite): string {
  const checked = inviteSchema.parse(invite)
  return INVITE_PREFIX + Buffer.from(JSON.stringify(checked)).toString('base64url')
}

const invalid = (why: string) => new MeshError('ERR_INVITE_INVALID', `not an invite token: ${why}`)

/** The invite a token carries; whitespace around it is ignored. @throws ERR_INVITE_INVALID */
export function decodeInvite(token: unknown): Invite {
  if (typeof token !== 'string') throw invalid('expected a string')
  const t = token.trim()
  if (t.length > MAX_TOKEN_CHARS) throw invalid(`longer than ${MAX_TOKEN_CHARS} characters`)
  if (!t.startsWith(INVITE_PREFIX)) throw invalid(`it does not start with '${INVITE_PREFIX}'`)
  const body = t.slice(INVITE_PREFIX.length)
  if (!/^[A-Za-z0-9_-]+$/.test(body)) throw invalid('its body is not base64url')
  let json: unknown
  try {
    json = JSON.parse(Buffer.from(body, 'base64url').toString('utf8'))
  } catch {
    throw invalid('its body is not JSON (was it cut short when copied?)')
  }
  const parsed = inviteSchema.safeParse(json)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    throw invalid(`${issue?.path.join('.') || 'token'}: ${issue?.message ?? 'invalid'}`)
  }
  return parsed.data
}

/** An invite as the gateway lists it: never its secret. */
export interface PublicInvite {
  id: string
  role: InviteRole
  note: string
  /** Username of the admin who made it. */
  createdBy: string
  createdAt: string
  /** After it, the token joins nobody new (members stay members). Null: never. */
  expiresAt: string | null
  /** Once set, the token joins nobody and its members are refused. */
  revokedAt: string | null
  /** Peers (hex keys) that joined with it. */
  members: Array<{ key: string; joinedAt: string }>
}
