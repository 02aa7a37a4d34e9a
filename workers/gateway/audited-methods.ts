import { USERNAME_RE } from '../../facilities/auth/users.js'
import type { AuditAction, AuditDetails } from '../../kernel/audit.js'
import type { MeshError } from '../../kernel/errors.js'
import type { PublicInvite } from '../../kernel/invite.js'

/**
 * What each audited RPC method of the gateway records (docs/operations.md "Audit log"): the
 * action, its target and a few details, taken from the call's payload and its result. Only ids,
 * names, roles, limits and counts are read from either: never a password, key, token or secret
 * (the results of `createKey`, `createInvite` and `login` hold one; they are not copied).
 */

/** What is known of a call before it runs. */
export interface CallFacts {
  payload: Record<string, unknown>
  /** The caller's user id, or `anonymous` (no or a bad credential, or accounts off). */
  actor: string
  /** First 16 hex of the caller's RPC key. */
  peer: string
  /** The caller's RPC key, hex. */
  peerKey: string
  /** The user the payload names (`username`), as it was before the call. */
  before: { id: string; role: string; disabled: boolean } | null
}

export interface Described {
  action: AuditAction
  target: string | null
  details?: AuditDetails
}

export interface MethodAudit {
  ok(f: CallFacts, result: unknown): Described[]
  failed(f: CallFacts, err: MeshError): Described
}

const HEX_ID_RE = /^[0-9a-f]{16}$/

/** A user name as given, when it could be one (a password typed in the name field is not copied). */
export function nameOf(v: unknown): string | undefined {
  return typeof v === 'string' && USERNAME_RE.test(v) ? v.toLowerCase() : undefined
}

const idOf = (v: unknown): string | null => (typeof v === 'string' && HEX_ID_RE.test(v) ? v : null)
/** A processor's key, or the prefix of one an admin typed. */
const keyOf = (v: unknown): string | null => (typeof v === 'string' && /^[0-9a-f]{1,64}$/.test(v) ? v : null)
/** What `processorDrain` was asked: drain, unless `draining: false`. */
const drainAction = (f: CallFacts): AuditAction =>
  f.payload.draining === false ? 'processor.undrain' : 'processor.drain'
/** A label someone typed (a key's name): kept short. */
const label = (v: unknown) => (typeof v === 'string' ? v.slice(0, 64) : undefined)
const rec = (v: unknown): Record<string, unknown> =>
  v && typeof v === 'object' ? (v as Record<string, unknown>) : {}
const some = (d: Record<string, unknown>): AuditDetails => {
  const out: AuditDetails = {}
  for (const [k, v] of Object.entries(d)) if (v !== undefined) out[k] = v
  return out
}

/** A model name as given, kept short. */
const modelOf = (v: unknown): string | null => (typeof v === 'string' && v !== '' ? v.slice(0, 128) : null)

/** The processors a model change (pull, copy, remove, load, unload) was done on, and failed on. */
export function doneAndFailed(results: readonly { processor: string; ok: boolean }[]): {
  done: string[]
  failed: string[]
} {
  return {
    done: results.filter((r) => r.ok).map((r) => r.processor),
    failed: results.filter((r) => !r.ok).map((r) => r.processor),
  }
}

/** A model change on processors: its target is the model; the processors it was done on, and those that failed. */
function modelChange(action: AuditAction): MethodAudit {
  return {
    ok: (f, result) => {
      const results = (rec(result).results ?? []) as { processor: string; ok: boolean }[]
      const details = some({
        destination: modelOf(f.payload.destination) ?? undefined,
        keepAliveMs: typeof f.payload.keepAliveMs === 'number' ? f.payload.keepAliveMs : undefined,
        replicas: typeof f.payload.replicas === 'number' ? f.payload.replicas : undefined,
        copied: results.some((r) => r.ok && 'from' in r) || undefined,
        ...doneAndFailed(results),
      })
      return [{ action, target: modelOf(f.payload.model), details }]
    },
    failed: (f) => ({ action, target: modelOf(f.payload.model) }),
  }
}

interface UserResult {
  id: string
  username: string
  role: string
  disabled: boolean
  limits: Record<string, unknown>
}

function userCreated(via: string | undefined): MethodAudit {
  return {
    ok: (_f, result) => {
      const u = result as UserResult
      const limits = Object.keys(u.limits ?? {}).length ? u.limits : undefined
      return [
        {
          action: 'user.create',
          target: u.id,
          details: some({ username: u.username, role: u.role, limits, via }),
        },
      ]
    },
    failed: (f) => ({
      action: 'user.create',
      target: f.before?.id ?? null,
      details: some({ username: nameOf(f.payload.username), via }),
    }),
  }
}

/** One entry per kind of change `updateUser` made; `user.update` when it changed nothing. */
function userUpdated(f: CallFacts, result: unknown): Described[] {
  const u = result as UserResult
  const p = f.payload
  const b = f.before
  const base = { username: u.username }
  const out: Described[] = []
  if (p.password !== undefined) out.push({ action: 'user.password.reset', target: u.id, details: base })
  if (b && b.role !== u.role)
    out.push({ action: 'user.role', target: u.id, details: { ...base, from: b.role, to: u.role } })
  if (p.limits !== undefined || p.resetLimits === true) {
    const reset = p.resetLimits === true ? true : undefined
    out.push({ action: 'user.limits', target: u.id, details: some({ ...base, limits: u.limits, reset }) })
  }
  if (b && b.disabled !== u.disabled)
    out.push({ action: u.disabled ? 'user.disable' : 'user.enable', target: u.id, details: base })
  if (!out.length) out.push({ action: 'user.update', target: u.id, details: { ...base, changed: false } })
  return out
}

const loginFailed = (f: CallFacts, err: MeshError): Described => ({
  action: err.code === 'ERR_RATE_LIMITED' ? 'auth.login.locked' : 'auth.login.failed',
  target: f.before?.id ?? null,
  details: some({ scope: err.code === 'ERR_RATE_LIMITED' ? err.details?.scope : undefined }),
})

/** The gateway's audited methods, by name. Reads (`listUsers`, `usage`, `audit`…) are not audited. */
export const AUDITED: Record<string, MethodAudit> = {
  createUser: userCreated(undefined),
  register: userCreated('register'),
  updateUser: {
    ok: userUpdated,
    failed: (f) => ({
      action: 'user.update',
      target: f.before?.id ?? null,
      details: some({ username: nameOf(f.payload.username) }),
    }),
  },
  changePassword: {
    ok: (f) => [{ action: 'user.password.change', target: f.actor }],
    failed: (f) => ({ action: 'user.password.change', target: f.actor === 'anonymous' ? null : f.actor }),
  },
  createKey: {
    ok: (_f, result) => {
      const k = rec(result)
      const details = some({ user: k.userId, name: label(k.name), models: k.models ?? undefined })
      return [
        {
          action: 'key.create',
          target: idOf(k.id),
          details: some({ ...details, expiresAt: k.expiresAt ?? undefined }),
        },
      ]
    },
    failed: (f) => ({ action: 'key.create', target: null, details: some({ user: nameOf(f.payload.user) }) }),
  },
  revokeKey: {
    ok: (_f, result) => {
      const k = rec(result)
      return [
        { action: 'key.revoke', target: idOf(k.id), details: some({ user: k.userId, name: label(k.name) }) },
      ]
    },
    failed: (f) => ({ action: 'key.revoke', target: idOf(f.payload.id) }),
  },
  createInvite: {
    ok: (_f, result) => {
      const i = result as PublicInvite
      return [{ action: 'invite.create', target: i.id, details: { role: i.role, expiresAt: i.expiresAt } }]
    },
    failed: () => ({ action: 'invite.create', target: null }),
  },
  revokeInvite: {
    ok: (_f, result) => {
      const i = result as PublicInvite
      return [{ action: 'invite.revoke', target: i.id, details: { role: i.role, members: i.members.length } }]
    },
    failed: (f) => ({ action: 'invite.revoke', target: idOf(f.payload.id) }),
  },
  join: {
    ok: (f, result) => {
      const i = rec(result).invite as PublicInvite
      return [{ action: 'invite.redeem', target: i.id, details: { role: i.role, member: f.peerKey } }]
    },
    failed: (f) => ({ action: 'invite.redeem', target: idOf(f.payload.id) }),
  },
  login: { ok: () => [], failed: loginFailed },
  processorDrain: {
    ok: (f, result) => {
      const r = rec(result)
      return [{ action: drainAction(f), target: keyOf(r.processor), details: some({ active: r.active }) }]
    },
    failed: (f) => ({ action: drainAction(f), target: keyOf(f.payload.processor) }),
  },
  modelRemove: modelChange('model.remove'),
  modelCopy: modelChange('model.copy'),
  modelLoad: modelChange('model.load'),
  modelUnload: modelChange('model.unload'),
  modelDesired: {
    ok: (_f, result) => {
      const r = rec(result)
      const d = r.desired === null ? { cleared: true } : rec(r.desired)
      return [{ action: 'model.desired', target: modelOf(r.model), details: some(d) }]
    },
    failed: (f) => ({ action: 'model.desired', target: modelOf(f.payload.model) }),
  },
  modelPull: modelChange('model.pull'),
}
