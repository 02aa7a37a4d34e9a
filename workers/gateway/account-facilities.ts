import { AuditLog } from '../../facilities/audit/audit-log.js'
import { AuthFacility } from '../../facilities/auth/auth.facility.js'
import { InvitesFacility } from '../../facilities/auth/invites.js'
import { LimitsFacility } from '../../facilities/limits.facility.js'
import type { Logger } from '../../facilities/log.facility.js'
import type { StoreFacility } from '../../facilities/store.facility.js'
import { UsageFacility } from '../../facilities/usage/usage.facility.js'
import type { GatewayConfig } from '../../kernel/config.js'
import { MeshError } from '../../kernel/errors.js'
import type { FacilitySpec } from '../base.worker.js'

export interface AccountFacilitiesOptions {
  config: GatewayConfig
  /** The worker's store. @throws when the worker has none */
  store: () => StoreFacility
  log: () => Logger
  /** True while no usage record is being written (the ledger's group commit waits for it). */
  quiet: () => boolean
  /** Told how long each ledger journal write took, in seconds (metrics). */
  onLedgerCommit?: (seconds: number) => void
}

/**
 * The gateway's facilities that keep accounts in its store: auth (users, keys, tokens), usage
 * (the ledger), limits (rate and quota), invites, and the audit log. Each is null until it is open, and stays
 * null when the config turns it off (accounts need `auth.enabled`; invites and the audit log need a store).
 */
export class AccountFacilities {
  auth: AuthFacility | null = null
  usage: UsageFacility | null = null
  limits: LimitsFacility | null = null
  invites: InvitesFacility | null = null
  /** The audit log: with a store, whatever else is on (opened before and closed after what records into it). */
  audit: AuditLog | null = null

  constructor(private readonly opts: AccountFacilitiesOptions) {}

  /** The ledger; only reached with accounts on. @throws ERR_UNAVAILABLE when accounts are off */
  get ledger(): UsageFacility {
    if (!this.usage) throw new MeshError('ERR_UNAVAILABLE', 'accounts are disabled on this gateway')
    return this.usage
  }

  /** The limits; only reached with accounts on. @throws ERR_UNAVAILABLE when accounts are off */
  get limiter(): LimitsFacility {
    if (!this.limits) throw new MeshError('ERR_UNAVAILABLE', 'accounts are disabled on this gateway')
    return this.limits
  }

  /** Auth, usage and limits, when `auth.enabled`: they need the store. Invites and the audit log, with a store. */
  specs(): FacilitySpec[] {
    const { config, log } = this.opts
    const specs: FacilitySpec[] = []
    if (config.store) {
      specs.push({
        name: 'audit',
        priority: 38,
        create: () => {
          const { failureWindowMs } = config.audit
          this.audit = new AuditLog({ store: this.opts.store(), logger: log(), failureWindowMs })
          return this.audit
        },
      })
      specs.push({
        name: 'invites',
        priority: 46,
        create: () => {
          this.invites = new InvitesFacility({ store: this.opts.store(), logger: log() })
          return this.invites
        },
      })
    }
    if (!config.auth.enabled) return specs
    const needStore = () => {
      try {
        return this.opts.store()
      } catch {
        throw MeshError.badConfig('config.store: a gateway with accounts (auth.enabled) needs a store folder')
      }
    }
    specs.push(
      {
        name: 'auth',
        priority: 40,
        create: () => {
          this.auth = new AuthFacility({ store: needStore(), config: config.auth, logger: log() })
          return this.auth
        },
      },
      {
        name: 'usage',
        priority: 42,
        create: () => {
          this.usage = new UsageFacility({
            store: needStore(),
            logger: log(),
            maxBatch: config.ledger.maxBatch,
            quiet: this.opts.quiet,
            ...(this.opts.onLedgerCommit ? { onCommit: this.opts.onLedgerCommit } : {}),
          })
          return this.usage
        },
      },
      {
        name: 'limits',
        priority: 44,
        create: () => {
          const usage = this.ledger
          this.limits = new LimitsFacility({ tokensUsed: (id, now) => usage.tokensUsed(id, now) })
          return this.limits
        },
      },
    )
    return specs
  }
}
