import type { InvitesFacility } from '../../facilities/auth/invites.js'
import type { MethodTable } from '../../facilities/net/rpc-server.js'
import type { RouterFacility } from '../../facilities/router/router.facility.js'
import type { GatewayConfig } from '../../kernel/config.js'
import { bootstrapSchema } from '../../kernel/config-bootstrap.js'
import { MeshError } from '../../kernel/errors.js'
import { encodeInvite, type PublicInvite } from '../../kernel/invite.js'
import type { Accounts } from './accounts.js'
import { asPayload } from './accounts.js'
import type { ProcessorAdmission } from './admission.js'

/** What `createInvite` answers: the token is shown this once. */
export interface CreatedInvite extends PublicInvite {
  token: string
}

/** What `join` answers a peer that redeemed an invite. */
export interface JoinReply {
  mesh: string
  gateway: string
  invite: PublicInvite
}

export interface InviteDeps {
  config: GatewayConfig
  accounts: Accounts
  invites(): InvitesFacility | null
  router(): RouterFacility
  admission: ProcessorAdmission
  publicKeyHex(): string
  /** The gateways this one vouches for changed (a gateway joined, or its invite was revoked). */
  gatewaysChanged(): Promise<void>
}

/** `host:port` strings of a parsed bootstrap, as a token carries them. */
function bootstrapStrings(b: GatewayConfig['bootstrap']): 'public' | string[] {
  return b === 'public' ? 'public' : b.map((n) => `${n.host}:${n.port}`)
}

/**
 * The gateway's invite methods (docs/security.md): admins create, list and revoke invites;
 * `join` is open, the invite being the credential, and makes the caller's key a member: a
 * processor this gateway uses, or a gateway it vouches for to its processors.
 */
export class GatewayInvites {
  constructor(private readonly deps: InviteDeps) {}

  methods(): MethodTable {
    return {
      createInvite: (payload) => this.create(asPayload(payload)),
      listInvites: (payload) => {
        this.deps.accounts.requireAdmin(payload)
        return { invites: this.store().list() }
      },
      revokeInvite: (payload) => this.revoke(asPayload(payload)),
      join: async (payload, ctx): Promise<JoinReply> => {
        const member = ctx.remotePublicKey.toString('hex')
        const invite = await this.store().redeem(asPayload(payload), member)
        // Used at once, rather than at the next lookup (or after a refused probe's backoff).
        if (invite.role === 'processor') this.deps.router().consider(ctx.remotePublicKey)
        // A gateway: vouched for to the processors before it hears back, so it can use them.
        else await this.deps.gatewaysChanged()
        return { mesh: this.deps.config.mesh, gateway: this.deps.publicKeyHex(), invite }
      },
    }
  }

  private store(): InvitesFacility {
    const invites = this.deps.invites()
    if (!invites) throw new MeshError('ERR_UNAVAILABLE', 'this gateway keeps no invites (it has no store)')
    return invites
  }

  private async create(p: Record<string, unknown>): Promise<CreatedInvite> {
    const admin = this.deps.accounts.requireAdmin(p)
    const { config } = this.deps
    let bootstrap = bootstrapStrings(config.bootstrap)
    if (p.bootstrap !== undefined) {
      const parsed = bootstrapSchema.safeParse(p.bootstrap)
      if (!parsed.success) throw MeshError.badRequest('request.bootstrap: "public" or a list of host:port')
      bootstrap = bootstrapStrings(parsed.data)
    }
    const { invite, secret } = await this.store().create(p, admin.username)
    const token = encodeInvite({
      v: 1,
      mesh: config.mesh,
      bootstrap,
      gateways: [this.deps.publicKeyHex()],
      ...(config.net.relays.length ? { relays: config.net.relays.map((k) => k.toLowerCase()) } : {}),
      role: invite.role,
      id: invite.id,
      secret,
    })
    return { ...invite, token }
  }

  /**
   * Revokes an invite. A processor invite: stops using, at once, the processors that were
   * members by it alone. A gateway invite: the processors hear the smaller set of gateways
   * this one vouches for before it answers (PUSH_WAIT_MS at most), and refuse the others.
   */
  private async revoke(p: Record<string, unknown>): Promise<PublicInvite> {
    this.deps.accounts.requireAdmin(p)
    const { invite, removed } = await this.store().revoke(p.id)
    if (invite.role === 'gateway') {
      if (removed.length) await this.deps.gatewaysChanged()
      return invite
    }
    for (const key of removed) {
      if (!this.deps.admission.admits(key)) this.deps.router().dropById(key, 'its invite was revoked')
    }
    return invite
  }
}
