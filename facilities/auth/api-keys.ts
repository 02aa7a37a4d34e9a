import type Hyperbee from 'hyperbee'
import { z } from 'zod'
import type { PublicKey } from '../../kernel/accounts.js'
import type { KeyLimits } from '../../kernel/config.js'
import { validate } from '../../kernel/config.js'
import { MeshError } from '../../kernel/errors.js'
import { baseModel } from '../../kernel/inference.js'
import type { Logger } from '../log.facility.js'
import type { Identity, Verified } from './identity.js'
import { keyLimitOverridesSchema } from './limit-overrides.js'
import { makeOpaque, opaqueMatches, parseOpaque } from './opaque-token.js'
import { nowIso, type Users } from './users.js'

export const API_KEY_PREFIX = 'lmk'

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

/** What `create` takes. */
const keySpecSchema = z
  .object({
    name: z.string().min(1).max(128),
    expiresInDays: z.number().positive().max(36_500).optional(),
    models: z.array(z.string().min(1).max(256)).min(1).max(256).optional(),
    limits: keyLimitOverridesSchema.optional(),
  })
  .strict()

export function publicKey(k: KeyRecord): PublicKey {
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

export interface ApiKeysOptions {
  db: () => Hyperbee
  users: Users
  log: Logger
}

/** API keys (`keys/<id>` in the auth bee), stored as the SHA-256 of their secret, all held in memory. */
export class ApiKeys {
  private readonly keys = new Map<string, KeyRecord>()

  constructor(private readonly opts: ApiKeysOptions) {}

  async load(bee: Hyperbee): Promise<void> {
    for await (const { value } of bee.createReadStream<KeyRecord>({ gte: 'keys/', lt: 'keys0' })) {
      this.keys.set(value.id, value)
    }
  }

  get(id: string): KeyRecord | undefined {
    return this.keys.get(id)
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
   * A new API key for a user; the key itself is returned here only, never stored.
   * A key made with an API key (`madeWith`) expires no later than that key.
   * @throws ERR_BAD_REQUEST, ERR_NOT_FOUND
   */
  async create(
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
    if (!this.opts.users.getById(userId)) throw new MeshError('ERR_NOT_FOUND', 'no such user')
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
    await this.save(k)
    this.opts.log.info({ userId, key: k.id, name: k.name }, 'API key created')
    return { key: made.token, ...publicKey(k) }
  }

  private async save(k: KeyRecord): Promise<void> {
    await this.opts.db().put(`keys/${k.id}`, k)
    this.keys.set(k.id, k)
  }

  list(userId?: string): PublicKey[] {
    return [...this.keys.values()]
      .filter((k) => userId === undefined || k.userId === userId)
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt))
      .map(publicKey)
  }

  /** @throws ERR_NOT_FOUND (also for a key of another user, unless `asAdmin`) */
  async revoke(id: unknown, userId: string, asAdmin = false): Promise<PublicKey> {
    const k = typeof id === 'string' ? this.keys.get(id) : undefined
    if (!k || (!asAdmin && k.userId !== userId))
      throw new MeshError('ERR_NOT_FOUND', `no API key '${String(id)}'`)
    if (k.revokedAt) return publicKey(k)
    const next = { ...k, revokedAt: nowIso() }
    await this.save(next)
    this.opts.log.info({ key: k.id }, 'API key revoked')
    return publicKey(next)
  }

  /** The identity of an API key. @throws ERR_AUTH_INVALID */
  verify(token: string): Verified {
    const parsed = parseOpaque(token, API_KEY_PREFIX)
    const k = parsed ? this.keys.get(parsed.id) : undefined
    const u = k ? this.opts.users.getById(k.userId) : undefined
    if (!parsed || !k || !u || !opaqueMatches(parsed, k.hash)) {
      throw new MeshError('ERR_AUTH_INVALID', 'unknown API key')
    }
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
}
