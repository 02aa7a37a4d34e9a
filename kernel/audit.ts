import { z } from 'zod'
import type { ErrorCode } from './errors.js'

/**
 * The audit log's protocol (docs/operations.md, "Audit log"): what an entry is, the actions
 * recorded, and the query the gateway's admin method `audit` takes.
 */

export const AUDIT_ACTIONS = [
  'user.create',
  'user.update',
  'user.role',
  'user.limits',
  'user.disable',
  'user.enable',
  'user.password.reset',
  'user.password.change',
  'key.create',
  'key.revoke',
  'invite.create',
  'invite.revoke',
  'invite.redeem',
  'auth.login.failed',
  'auth.login.locked',
  'processor.drain',
  'processor.undrain',
  'model.remove',
  'model.copy',
  'model.load',
  'model.unload',
  'model.desired',
  'model.pull',
] as const

export type AuditAction = (typeof AUDIT_ACTIONS)[number]

/** Who acted when no user did: the gateway itself (its first admin), the CLI on a stopped store, a caller without a credential. */
export type AuditActorKind = 'system' | 'cli' | 'anonymous'

/** Small facts about an entry: ids, names, counts, roles. Never a password, key, token or secret. */
export type AuditDetails = Record<string, unknown>

export interface AuditEntry {
  /** `<13-digit ms>-<6-digit sequence>`: the entry's key in the audit bee (after `audit/`), in time order. */
  id: string
  /** When it was recorded, ms since the epoch (never before the entry ahead of it). */
  at: number
  action: AuditAction
  /** A user id, or `system`, `cli`, `anonymous`. */
  actor: string
  /** What it was done to: a user id, a key id, an invite id, a processor key; null when none is known. */
  target: string | null
  /** `ok`, or the error code the action failed with. */
  outcome: 'ok' | ErrorCode
  requestId?: string
  details?: AuditDetails
}

/** Most entries one `audit` call returns. */
export const MAX_AUDIT_LIMIT = 1000
export const DEFAULT_AUDIT_LIMIT = 100

const instant = z.union([
  z.number().int().min(0),
  z
    .string()
    .max(40)
    .transform((s, ctx) => {
      const ms = Date.parse(s)
      if (Number.isFinite(ms)) return ms
      ctx.addIssue({ code: 'custom', message: 'a time: ms since the epoch, or an ISO 8601 string' })
      return z.NEVER
    }),
])

export const auditQuerySchema = z
  .object({
    /** Entries at or after this time (ms or ISO 8601). */
    since: instant.optional(),
    /** Entries before this time (ms or ISO 8601). */
    until: instant.optional(),
    limit: z.number().int().min(1).max(MAX_AUDIT_LIMIT).default(DEFAULT_AUDIT_LIMIT),
    /** An action, or a prefix of actions at a dot: `user` matches `user.create` and `user.password.reset`. */
    action: z
      .string()
      .regex(/^[a-z]+(\.[a-z]+)*$/, 'an action like user.create, or a prefix like user')
      .max(64)
      .optional(),
  })
  .strip()

export type AuditQuery = z.input<typeof auditQuerySchema>
export type ParsedAuditQuery = z.output<typeof auditQuerySchema>

/** What `audit` answers: the newest `limit` matching entries, oldest first; `more` when older ones matched too. */
export interface AuditPage {
  entries: AuditEntry[]
  more: boolean
}

/** Whether `action` is `filter` or one of its sub-actions. */
export function actionMatches(action: string, filter: string): boolean {
  return action === filter || action.startsWith(`${filter}.`)
}
