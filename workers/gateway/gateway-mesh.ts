import type { EventEmitter } from 'node:events'
import type { InvitesFacility } from '../../facilities/auth/invites.js'
import { Facility } from '../../facilities/facility.js'
import type { Logger } from '../../facilities/log.facility.js'
import type { NetFacility } from '../../facilities/net/net.facility.js'
import type { CallContext, MethodTable } from '../../facilities/net/rpc-server.js'
import type { ProcessorEntry, RouterFacility } from '../../facilities/router/router.facility.js'
import type { StoreFacility } from '../../facilities/store.facility.js'
import type { GatewayConfig } from '../../kernel/config.js'
import { MeshError } from '../../kernel/errors.js'
import type { Invite } from '../../kernel/invite.js'
import { configInvite, redeemInvite } from '../join-invite.js'
import type { ProcessorAdmission } from './admission.js'
import { MAX_MESH_MEMBERS, MeshMembersClient, type MeshMembersReply } from './mesh-members.js'
import { TrustPush } from './trust-push.js'

/** Longest an admin's revoke, or a gateway's join, waits for the processors to take the new set. */
export const PUSH_WAIT_MS = 5_000

export interface GatewayMeshDeps {
  config: GatewayConfig
  net(): NetFacility
  router(): RouterFacility
  /** The router, or null before it opened. */
  routerIfOpen(): RouterFacility | null
  invites(): InvitesFacility | null
  store(): StoreFacility | null
  admission: ProcessorAdmission
  log(): Logger
}

/**
 * A gateway among gateways (docs/architecture.md, Joining by invite). As an issuer: it vouches
 * for the gateways that joined with its gateway invites to the processors it uses (TrustPush),
 * and lists those processors to them (`meshMembers`). As a joined gateway (config `invite`):
 * it redeems its invite at start (a refusal stops the start) and admits the processors its
 * issuers list (MeshMembersClient).
 */
export class GatewayMesh extends Facility {
  readonly name = 'gateway-mesh'
  readonly invite: Invite | null
  readonly push: TrustPush
  private members: MeshMembersClient | null = null
  private events: EventEmitter | null = null
  private readonly onAdmitted = (entry: ProcessorEntry) => this.push.admitted(entry.publicKey)

  constructor(private readonly deps: GatewayMeshDeps) {
    super()
    this.invite = configInvite('gateway', deps.config)
    this.push = new TrustPush(deps)
  }

  /**
   * Joins (with the config's invite) and asks the issuers for the members before the router
   * starts: its first lookup then finds the processors already vouched for and listed.
   */
  protected override async _open(): Promise<void> {
    if (this.invite) {
      const accepted = await redeemInvite({
        invite: this.invite,
        net: this.deps.net(),
        store: this.deps.store(),
        log: this.deps.log(),
      })
      this.members = new MeshMembersClient({
        issuers: accepted.length ? accepted : this.invite.gateways,
        net: this.deps.net,
        router: this.deps.routerIfOpen,
        admitsOwn: (key) => this.deps.admission.admitsOwn(key),
        log: this.deps.log,
      })
      await this.members.start()
    }
    this.push.start()
  }

  protected override async _close(): Promise<void> {
    this.push.stop()
    this.events?.off('added', this.onAdmitted)
    this.events?.off('restarted', this.onAdmitted)
    this.events = null
    this.members?.stop()
  }

  /** Pushes `trust` to each processor the router admits (the router's events, before it starts). */
  watch(events: EventEmitter): void {
    this.events = events
    events.on('added', this.onAdmitted)
    events.on('restarted', this.onAdmitted)
  }

  /** Whether the gateways that issued this one's invite list the processor `key` (hex). */
  admits(key: string): boolean {
    return this.members?.admits(key) ?? false
  }

  /** A processor nobody admits answered a probe: maybe the issuers know it by now. */
  unknown(key: string): void {
    this.members?.unknown(key)
  }

  /** The set of gateways this one vouches for changed: every processor hears it (bounded wait). */
  async gatewaysChanged(): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    await Promise.race([
      this.push.pushAll(),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, PUSH_WAIT_MS)
      }),
    ])
    clearTimeout(timer)
  }

  methods(): MethodTable {
    return { meshMembers: (_payload, ctx) => this.meshMembers(ctx) }
  }

  /**
   * The processors this gateway admits, for the gateways it vouches for (the live members of
   * its gateway invites) and nobody else: its trusted keys, its processor invites' members,
   * the keys that proved the mesh secret, and under admission 'any' the processors it uses.
   * Not the ones another gateway lists to it: mesh membership does not chain either.
   * @throws ERR_FORBIDDEN
   */
  private meshMembers(ctx: CallContext): MeshMembersReply {
    const caller = ctx.remotePublicKey.toString('hex')
    if (this.deps.invites()?.isMember(caller, 'gateway') !== true)
      throw new MeshError(
        'ERR_FORBIDDEN',
        'only a gateway joined to this one by a live invite may ask for its members',
      )
    const keys = new Set(this.deps.admission.memberKeys())
    if (this.deps.admission.mode === 'any') for (const e of this.deps.router().live()) keys.add(e.id)
    return { mesh: this.deps.config.mesh, processors: [...keys].slice(0, MAX_MESH_MEMBERS) }
  }
}
