import type { AuditLog, AuditRecord } from '../../facilities/audit/audit-log.js'
import type { AuthFacility } from '../../facilities/auth/auth.facility.js'
import type { Logger } from '../../facilities/log.facility.js'
import type { CallContext, MethodTable } from '../../facilities/net/rpc-server.js'
import { type AuditPage, auditQuerySchema } from '../../kernel/audit.js'
import { validate } from '../../kernel/config.js'
import { MeshError } from '../../kernel/errors.js'
import { errorMessage } from '../../kernel/util.js'
import { type Accounts, asPayload } from './accounts.js'
import { AUDITED, type CallFacts, type Described, type MethodAudit, nameOf } from './audited-methods.js'

/** Where the audit log and the accounts are: the gateway's account facilities. */
export interface AuditFacilities {
  /** The audit log, or null when the gateway has none (no store) or it is not open yet. */
  audit: AuditLog | null
  auth: AuthFacility | null
}

const REQUEST_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/

/**
 * The gateway's audit trail: records what the audited RPC methods did (`wrap`, the
 * descriptions in audited-methods.ts), what the gateway does outside them (`record`: a
 * processor drained), and lets admins read it (`audit`).
 *
 * A method that succeeded has its entries durable before its reply goes (`AuditLog.record` is
 * awaited). If that write fails, the action has still happened: the reply says so, and the
 * missing entry is logged at error level (the store is failing, which the gateway's other writes
 * will show too). A method that failed has its entry counted by the log's failure digest, not
 * awaited: refusals are what floods are made of.
 */
export class GatewayAudit {
  private readonly deps: {
    log(): AuditLog | null
    auth(): AuthFacility | null
    accounts(): Accounts
    logger(): Logger
  }

  constructor(facilities: () => AuditFacilities, accounts: () => Accounts, logger: () => Logger) {
    this.deps = { log: () => facilities().audit, auth: () => facilities().auth, accounts, logger }
  }

  /** The admin method `audit`: `{ since?, until?, limit?, action? }` → the newest entries, oldest first. */
  methods(): MethodTable {
    return {
      audit: (payload): Promise<AuditPage> => {
        this.deps.accounts().requireAdmin(payload)
        const query = validate(auditQuerySchema, asPayload(payload), 'request', 'ERR_BAD_REQUEST')
        return this.open().read(query)
      },
    }
  }

  private open(): AuditLog {
    const log = this.deps.log()
    if (!log) throw new MeshError('ERR_UNAVAILABLE', 'this gateway keeps no audit log (it has no store)')
    return log
  }

  /**
   * Records an action the gateway took outside the audited methods (actor `system` for its own,
   * or the admin's user id; `target` the user, key or processor acted on); resolves once the
   * entry is durable. Never throws: a failed write is logged (see the class comment). No-op without a log.
   */
  async record(r: AuditRecord): Promise<void> {
    const log = this.deps.log()
    if (!log) return
    try {
      await log.record(r)
    } catch (err) {
      this.deps
        .logger()
        .error({ err: errorMessage(err), action: r.action }, 'audit: an entry was not written')
    }
  }

  /** `table` with its audited methods (audited-methods.ts) recording what they did. */
  wrap(table: MethodTable): MethodTable {
    for (const [name, audit] of Object.entries(AUDITED)) {
      const handler = table[name]
      if (!handler) continue
      table[name] = async (payload, ctx) => {
        if (!this.deps.log()) return handler(payload, ctx)
        const facts = this.facts(payload, ctx)
        let result: unknown
        try {
          result = await handler(payload, ctx)
        } catch (err) {
          this.failed(audit, facts, MeshError.from(err))
          throw err
        }
        await this.succeeded(audit, facts, result)
        return result
      }
    }
    return table
  }

  /** Who calls and about whom, taken before the call (which may change both: a disable, a new password). */
  private facts(payload: unknown, ctx: CallContext): CallFacts {
    const p = asPayload(payload)
    let actor = 'anonymous'
    try {
      actor = p.auth === undefined ? actor : (this.deps.accounts().identify(p)?.userId ?? actor)
    } catch {}
    const name = nameOf(p.username)
    const u = name ? this.deps.auth()?.user(name) : undefined
    const peerKey = ctx.remotePublicKey.toString('hex')
    return {
      payload: p,
      actor,
      peer: peerKey.slice(0, 16),
      peerKey,
      before: u ? { id: u.id, role: u.role, disabled: u.disabled } : null,
    }
  }

  private requestId(f: CallFacts): { requestId?: string } {
    const id = f.payload.requestId
    return typeof id === 'string' && REQUEST_ID_RE.test(id) ? { requestId: id } : {}
  }

  private async succeeded(audit: MethodAudit, f: CallFacts, result: unknown): Promise<void> {
    let described: Described[]
    try {
      described = audit.ok(f, result)
    } catch (err) {
      this.deps.logger().error({ err: errorMessage(err) }, 'audit: an action could not be described')
      return
    }
    await Promise.all(described.map((d) => this.record({ ...d, actor: f.actor, ...this.requestId(f) })))
  }

  private failed(audit: MethodAudit, f: CallFacts, err: MeshError): void {
    try {
      const d = audit.failed(f, err)
      this.deps
        .log()
        ?.failure({ ...d, actor: f.actor, outcome: err.code, peer: f.peer, ...this.requestId(f) })
    } catch (e) {
      this.deps.logger().error({ err: errorMessage(e) }, 'audit: a failure could not be recorded')
    }
  }
}
