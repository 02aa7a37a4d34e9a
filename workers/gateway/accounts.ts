import { AuthFacility, type Identity } from '../../facilities/auth/auth.facility.js'
import type { LimitsFacility, Subject } from '../../facilities/limits.facility.js'
import type { MethodTable } from '../../facilities/net/rpc-server.js'
import { sumRows, type UsageFacility, utcDay, utcMonth } from '../../facilities/usage/usage.facility.js'
import type { Role } from '../../kernel/accounts.js'
import type { GatewayConfig } from '../../kernel/config.js'
import { MeshError } from '../../kernel/errors.js'
import { isRecord } from '../../kernel/util.js'

export type Payload = Record<string, unknown>

export function asPayload(payload: unknown): Payload {
  return isRecord(payload) ? payload : {}
}

function optionalString(p: Payload, field: string): string | undefined {
  const v = p[field]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'string') throw MeshError.badRequest(`request.${field}: expected string`)
  return v
}

/** The facilities accounts live in; each getter throws ERR_UNAVAILABLE when accounts are off, but `auth` (null then). */
export interface AccountFacilities {
  auth(): AuthFacility | null
  usage(): UsageFacility
  limits(): LimitsFacility
}

/**
 * The gateway's account methods and their policy: who may act on whose
 * account (`targetUser`), which keys may manage keys (`requireKeyManager`),
 * registration, and usage reports. The one way the gateway reaches auth.
 */
export class Accounts {
  constructor(
    private readonly config: GatewayConfig,
    private readonly facs: AccountFacilities,
  ) {}

  /** The RPC methods about accounts, keys, users and usage. */
  methods(): MethodTable {
    return {
      login: (payload, ctx) => {
        const p = asPayload(payload)
        return this.auth().login(p.username, p.password, ctx.remotePublicKey.toString('hex'))
      },
      refresh: (payload) => this.auth().refresh(asPayload(payload).refreshToken),
      register: (payload) => this.register(asPayload(payload)),
      logout: async (payload) => {
        const p = asPayload(payload)
        await this.auth().logout(this.requireIdentity(p), p.refreshToken)
        return { ok: true }
      },
      whoami: (payload) => this.whoami(this.requireIdentity(payload)),
      changePassword: async (payload, ctx) => {
        const p = asPayload(payload)
        const id = this.requireIdentity(p)
        const source = ctx.remotePublicKey.toString('hex')
        await this.auth().changePassword(id, p.currentPassword, p.newPassword, source)
        return { ok: true }
      },
      createKey: (payload) => this.createKey(asPayload(payload)),
      listKeys: (payload) => {
        const p = asPayload(payload)
        const target = this.targetUser(this.requireIdentity(p), optionalString(p, 'user'))
        return { keys: this.auth().listKeys(target.id) }
      },
      revokeKey: (payload) => {
        const p = asPayload(payload)
        const id = this.requireKeyManager(p)
        return this.auth().revokeKey(p.id, id.userId, id.role === 'admin')
      },
      usage: (payload) => this.usageReport(asPayload(payload)),
      listUsers: (payload) => {
        this.requireAdmin(payload)
        return { users: this.auth().listUsers() }
      },
      createUser: (payload) => {
        const p = asPayload(payload)
        this.requireAdmin(p)
        return this.auth().createUser({
          username: p.username,
          password: p.password,
          role: this.roleOf(p.role),
          limits: p.limits,
        })
      },
      updateUser: async (payload) => {
        const p = asPayload(payload)
        this.requireAdmin(p)
        const username = optionalString(p, 'username')
        if (!username) throw MeshError.badRequest('request.username: required')
        if (p.disabled !== undefined && typeof p.disabled !== 'boolean')
          throw MeshError.badRequest('request.disabled: expected boolean')
        if (p.password !== undefined) await this.auth().setPassword(username, p.password)
        return this.auth().updateUser(username, {
          ...(p.role !== undefined ? { role: this.roleOf(p.role) } : {}),
          ...(p.limits !== undefined ? { limits: p.limits } : {}),
          ...(p.disabled !== undefined ? { disabled: p.disabled as boolean } : {}),
          ...(p.resetLimits === true ? { resetLimits: true } : {}),
        })
      },
    }
  }

  private auth(): AuthFacility {
    const auth = this.facs.auth()
    if (!auth) throw new MeshError('ERR_UNAVAILABLE', 'accounts are disabled on this gateway')
    return auth
  }

  /** The caller's identity from `payload.auth`, or null when auth is disabled. @throws ERR_AUTH_* */
  identify(payload: unknown): Identity | null {
    const auth = this.facs.auth()
    if (!auth) return null
    return auth.authenticate(asPayload(payload).auth)
  }

  requireIdentity(payload: unknown): Identity {
    return this.auth().authenticate(asPayload(payload).auth)
  }

  requireAdmin(payload: unknown): Identity {
    const id = this.requireIdentity(payload)
    if (id.role !== 'admin') throw new MeshError('ERR_FORBIDDEN', 'admins only')
    return id
  }

  private roleOf(v: unknown): Role {
    if (v === undefined || v === 'user') return 'user'
    if (v === 'admin') return 'admin'
    throw MeshError.badRequest("request.role: 'admin' or 'user'")
  }

  /** The user a request is about: the caller, or (admins only) the one named. */
  private targetUser(caller: Identity, username: string | undefined) {
    const auth = this.auth()
    if (username !== undefined && username.toLowerCase() !== caller.username) {
      if (caller.role !== 'admin')
        throw new MeshError('ERR_FORBIDDEN', "only admins may act on another user's account")
      const u = auth.user(username)
      if (!u) throw new MeshError('ERR_NOT_FOUND', `no user '${username}'`, { username })
      return u
    }
    const u = auth.userById(caller.userId)
    if (!u) throw new MeshError('ERR_AUTH_INVALID', 'user is gone')
    return u
  }

  subjectOf(identity: Identity): Subject {
    const auth = this.auth()
    const u = auth.userById(identity.userId)
    const k = identity.keyId ? auth.key(identity.keyId) : undefined
    return {
      userId: identity.userId,
      username: identity.username,
      keyId: identity.keyId,
      userLimits: { ...this.config.limits.user, ...u?.limits },
      keyLimits: k ? { ...this.config.limits.key, ...k.limits } : null,
    }
  }

  private async register(p: Payload) {
    const auth = this.auth()
    if (this.config.auth.registration !== 'open') {
      const caller = p.auth === undefined ? null : this.requireIdentity(p)
      if (caller?.role !== 'admin') {
        throw new MeshError(
          'ERR_FORBIDDEN',
          'registration is closed on this gateway: ask an admin for an account',
        )
      }
    }
    return auth.createUser({ username: p.username, password: p.password, role: 'user' })
  }

  private whoami(identity: Identity) {
    const u = this.auth().userById(identity.userId)
    if (!u) throw new MeshError('ERR_AUTH_INVALID', 'user is gone')
    return {
      user: AuthFacility.publicUser(u),
      via: identity.keyId ? 'apiKey' : 'token',
      keyId: identity.keyId,
      models: identity.models,
      limits: this.facs.limits().state(this.subjectOf(identity)),
    }
  }

  /**
   * Key management from an API key that is itself restricted (model list or
   * own limits) would let it mint a key without those restrictions: refused.
   * @throws ERR_FORBIDDEN
   */
  private requireKeyManager(payload: unknown): Identity {
    const caller = this.requireIdentity(payload)
    if (caller.role === 'admin' || !caller.keyId) return caller
    const key = this.auth().key(caller.keyId)
    const restricted = caller.models !== null || Object.values(key?.limits ?? {}).some((v) => v !== undefined)
    if (restricted) {
      throw new MeshError(
        'ERR_FORBIDDEN',
        'a restricted API key cannot manage keys: log in, or use an unrestricted key',
      )
    }
    return caller
  }

  private async createKey(p: Payload) {
    const caller = this.requireKeyManager(p)
    const target = this.targetUser(caller, optionalString(p, 'user'))
    return this.auth().createKey(
      target.id,
      { name: p.name, expiresInDays: p.expiresInDays, models: p.models, limits: p.limits },
      caller,
    )
  }

  /** Usage per day and model over a range (default: this month), with today's and this month's totals. */
  private async usageReport(p: Payload) {
    const caller = this.requireIdentity(p)
    const target = this.targetUser(caller, optionalString(p, 'user'))
    const usage = this.facs.usage()
    const now = Date.now()
    const today = utcDay(now)
    const monthStart = `${utcMonth(now)}-01`
    const from = optionalString(p, 'from') ?? monthStart
    const to = optionalString(p, 'to') ?? today
    const model = optionalString(p, 'model')
    const range = await usage.summary(target.id, from, to, model)
    const month =
      from === monthStart && to === today && !model
        ? range
        : await usage.summary(target.id, monthStart, today)
    const report: Record<string, unknown> = {
      user: target.username,
      from,
      to,
      rows: range.rows,
      total: range.total,
      today: sumRows(month.rows, (r) => r.day === today),
      month: month.total,
    }
    if (p.records === true) {
      const limit = typeof p.limit === 'number' && p.limit > 0 ? Math.min(p.limit, 10_000) : 1000
      report.records = await usage.records(
        target.id,
        Date.parse(`${from}T00:00:00Z`),
        Date.parse(`${to}T23:59:59.999Z`),
        limit,
      )
    }
    await usage.loadTotals(target.id, now)
    report.limits = this.facs.limits().state(
      this.subjectOf({
        userId: target.id,
        username: target.username,
        role: target.role,
        keyId: null,
        models: null,
        jti: null,
        expiresAt: null,
      }),
      now,
    )
    return report
  }
}
