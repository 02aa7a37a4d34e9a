import type Hyperbee from 'hyperbee'
import { MeshError } from '../../kernel/errors.js'
import { INVITE_ROLES, type InviteRole, MAX_GATEWAY_MEMBERS, type PublicInvite } from '../../kernel/invite.js'
import { Facility } from '../facility.js'
import { Serial } from '../lib/serial.js'
import type { Logger } from '../log.facility.js'
import type { StoreFacility } from '../store.facility.js'
import { FailureLog } from './failure-log.js'
import { makeOpaque, opaqueMatches } from './opaque-token.js'

/**
 * Invites (docs/security.md): join credentials a gateway's admins hand to new machines, kept
 * in the gateway's Hyperbee `invites` as `invites/<id>`, the secret as its SHA-256 (like API
 * keys: it is 192-bit random), and the peers that joined with each as `members/<id>/<key>`
 * (one small record a join, whatever the number of members). All held in memory.
 */

export const INVITES_BEE = 'invites'
/** Longest an invite may stay redeemable. */
export const MAX_INVITE_MS = 365 * 86_400_000
/** Default time an invite stays redeemable. */
export const DEFAULT_INVITE_MS = 24 * 3_600_000
/** Members one invite may have: a token for a fleet, not for the whole world. */
export const MAX_MEMBERS = 10_000
/** Failed redeems within the window, per peer and per invite, before they are refused unchecked. */
const MAX_FAILURES = 20
const FAILURE_WINDOW_MS = 15 * 60_000

export interface InviteRecord extends PublicInvite {
  /** SHA-256 of the secret, hex. */
  hash: string
}

const publicInvite = ({ hash: _hash, ...rest }: InviteRecord): PublicInvite => rest

const nowIso = () => new Date().toISOString()

export interface InvitesOptions {
  store: StoreFacility
  logger: Logger
}

export class InvitesFacility extends Facility {
  readonly name = 'invites'
  private readonly storeFacility: StoreFacility
  private readonly log: Logger
  private bee: Hyperbee | null = null
  private readonly invites = new Map<string, InviteRecord>()
  /** Live (unrevoked) invites each member key joined with. */
  private readonly members = new Map<string, Set<string>>()
  private readonly serial = new Serial()
  private readonly peerFailures = new FailureLog(MAX_FAILURES, FAILURE_WINDOW_MS)
  private readonly inviteFailures = new FailureLog(MAX_FAILURES, FAILURE_WINDOW_MS)
  /** Refused joins are logged at most once a second (a flood of them is counted, not logged). */
  private refusalsLogged = { at: 0, suppressed: 0 }

  constructor(opts: InvitesOptions) {
    super()
    this.storeFacility = opts.store
    this.log = opts.logger
  }

  protected override async _open(): Promise<void> {
    const bee = await this.storeFacility.bee(INVITES_BEE)
    for await (const { value } of bee.createReadStream<InviteRecord>({ gte: 'invites/', lt: 'invites0' })) {
      this.invites.set(value.id, { ...value, members: [...(value.members ?? [])] })
    }
    const stream = bee.createReadStream<{ joinedAt: string }>({ gte: 'members/', lt: 'members0' })
    for await (const { key, value } of stream) {
      const [, id, member] = key.split('/')
      const inv = id ? this.invites.get(id) : undefined
      if (inv && member && !inv.members.some((m) => m.key === member))
        inv.members.push({ key: member, joinedAt: value.joinedAt })
    }
    for (const inv of this.invites.values()) this.remember(inv)
    this.bee = bee
  }

  protected override async _close(): Promise<void> {
    await this.serial.idle()
    this.bee = null
  }

  private get db(): Hyperbee {
    if (!this.bee) throw new MeshError('ERR_UNAVAILABLE', 'invites are closed')
    return this.bee
  }

  private remember(inv: InviteRecord): void {
    this.invites.set(inv.id, inv)
    for (const m of inv.members) {
      const ids = this.members.get(m.key) ?? new Set<string>()
      if (inv.revokedAt) ids.delete(inv.id)
      else ids.add(inv.id)
      if (ids.size) this.members.set(m.key, ids)
      else this.members.delete(m.key)
    }
  }

  /** Writes an invite's own record (its members are records of their own). */
  private async save(inv: InviteRecord): Promise<void> {
    await this.db.put(`invites/${inv.id}`, { ...inv, members: [] })
    this.remember(inv)
  }

  /**
   * A new invite; its secret is returned here only, never stored.
   * @throws ERR_BAD_REQUEST
   */
  async create(
    input: { role?: unknown; expiresInMs?: unknown; note?: unknown },
    createdBy: string,
  ): Promise<{ invite: PublicInvite; secret: string }> {
    const role = input.role ?? 'processor'
    if (!INVITE_ROLES.includes(role as InviteRole))
      throw MeshError.badRequest("request.role: 'processor' or 'gateway'")
    const ms = input.expiresInMs === undefined ? DEFAULT_INVITE_MS : input.expiresInMs
    if (ms !== null && (typeof ms !== 'number' || !Number.isInteger(ms) || ms < 1 || ms > MAX_INVITE_MS))
      throw MeshError.badRequest(
        `request.expiresInMs: an integer from 1 to ${MAX_INVITE_MS}, or null (never)`,
      )
    const note = input.note ?? ''
    if (typeof note !== 'string' || note.length > 256)
      throw MeshError.badRequest('request.note: a string of at most 256 characters')
    const made = makeOpaque('lmi')
    const inv: InviteRecord = {
      id: made.id,
      role: role as InviteRole,
      hash: made.hash,
      note,
      createdBy,
      createdAt: nowIso(),
      expiresAt: ms === null ? null : new Date(Date.now() + ms).toISOString(),
      revokedAt: null,
      members: [],
    }
    await this.serial.run(() => this.save(inv))
    this.log.info(
      { invite: inv.id, role: inv.role, expiresAt: inv.expiresAt, by: createdBy },
      'invite created',
    )
    return { invite: publicInvite(inv), secret: made.token.slice(`lmi_${made.id}_`.length) }
  }

  list(): PublicInvite[] {
    return [...this.invites.values()].sort((a, b) => a.createdAt.localeCompare(b.createdAt)).map(publicInvite)
  }

  /**
   * Revokes an invite: it joins nobody more, and its members are members no more (unless
   * another live invite admitted them too). Returns it and the keys that stopped being members.
   * @throws ERR_NOT_FOUND
   */
  revoke(id: unknown): Promise<{ invite: PublicInvite; removed: string[] }> {
    return this.serial.run(async () => {
      const inv = typeof id === 'string' ? this.invites.get(id) : undefined
      if (!inv) throw new MeshError('ERR_NOT_FOUND', `no invite '${String(id)}'`)
      if (inv.revokedAt) return { invite: publicInvite(inv), removed: [] }
      await this.save({ ...inv, revokedAt: nowIso() })
      // Members for this invite's role no more (a key may be a member in the other role too).
      const removed = inv.members.map((m) => m.key).filter((k) => !this.isMember(k, inv.role))
      this.log.info({ invite: inv.id, removed: removed.length }, 'invite revoked')
      return { invite: publicInvite(this.invites.get(inv.id) as InviteRecord), removed }
    })
  }

  /** Whether `key` (hex) joined with an invite for `role` that is not revoked. */
  isMember(key: string, role: InviteRole = 'processor'): boolean {
    for (const id of this.members.get(key) ?? []) if (this.invites.get(id)?.role === role) return true
    return false
  }

  /** Whether any invite for `role` was ever made (revoked or not). */
  everMade(role: InviteRole): boolean {
    for (const inv of this.invites.values()) if (inv.role === role) return true
    return false
  }

  /** Live members for `role`. */
  memberKeys(role: InviteRole = 'processor'): string[] {
    return [...this.members.keys()].filter((k) => this.isMember(k, role))
  }

  /**
   * Redeems an invite for the peer `member` (hex key), which tries it from `source` (its
   * connection's key). A member may redeem again after the invite expired, never after it was
   * revoked. Failures are bounded per peer and per invite, so the secret cannot be guessed.
   * @throws ERR_INVITE_INVALID (unknown, wrong secret or role), ERR_INVITE_REVOKED,
   *   ERR_INVITE_EXPIRED, ERR_RATE_LIMITED, ERR_FORBIDDEN (no room for more members)
   */
  async redeem(
    input: { id?: unknown; secret?: unknown; role?: unknown },
    member: string,
  ): Promise<PublicInvite> {
    const id = typeof input.id === 'string' ? input.id : ''
    const now = Date.now()
    // An invite held by others' failures still lets its members back in (a restart must not
    // be locked out by whoever knows the invite's id); a member's own failures still count.
    const isMember = this.invites.get(id)?.members.some((m) => m.key === member) === true
    const holds = [[this.peerFailures, member, 'this peer']] as Array<[FailureLog, string, string]>
    if (!isMember) holds.push([this.inviteFailures, id, 'this invite'])
    for (const [log, name, who] of holds) {
      const wait = log.blockedFor(name, now)
      if (wait > 0)
        throw new MeshError('ERR_RATE_LIMITED', `too many failed joins for ${who}; retry later`, {
          limit: 'join',
          retryAfterMs: Math.ceil(wait),
        })
    }
    const inv = this.invites.get(id)
    const secret = typeof input.secret === 'string' ? input.secret : ''
    if (!inv || !opaqueMatches({ id, secret }, inv.hash)) {
      this.peerFailures.done(member, true, now)
      if (inv) this.inviteFailures.done(id, true, now)
      this.logRefusal(member, id, now)
      throw new MeshError('ERR_INVITE_INVALID', 'unknown invite, or a wrong secret')
    }
    return this.serial.run(() => this.admit(this.invites.get(id) ?? inv, input.role, member))
  }

  private logRefusal(member: string, id: string, now: number): void {
    const logged = this.refusalsLogged
    if (now - logged.at < 1_000) {
      logged.suppressed++
      return
    }
    const suppressed = logged.suppressed
    this.refusalsLogged = { at: now, suppressed: 0 }
    this.log.warn(
      { peer: member, invite: id.slice(0, 16), ...(suppressed ? { suppressed } : {}) },
      'join refused: unknown invite or wrong secret',
    )
  }

  private async admit(inv: InviteRecord, role: unknown, member: string): Promise<PublicInvite> {
    if (role !== undefined && role !== inv.role)
      throw new MeshError('ERR_INVITE_INVALID', `this invite is for a ${inv.role}, not a ${String(role)}`)
    if (inv.revokedAt)
      throw new MeshError('ERR_INVITE_REVOKED', `invite ${inv.id} was revoked at ${inv.revokedAt}`)
    if (inv.members.some((m) => m.key === member)) return publicInvite(inv)
    if (inv.expiresAt && Date.parse(inv.expiresAt) <= Date.now())
      throw new MeshError('ERR_INVITE_EXPIRED', `invite ${inv.id} expired at ${inv.expiresAt}`)
    if (inv.members.length >= MAX_MEMBERS)
      throw new MeshError('ERR_FORBIDDEN', `invite ${inv.id} has its ${MAX_MEMBERS} members already`)
    // Processors take at most this many vouched-for gateways: more would make every push fail.
    if (inv.role === 'gateway' && this.memberKeys('gateway').length >= MAX_GATEWAY_MEMBERS)
      throw new MeshError('ERR_FORBIDDEN', `this gateway has ${MAX_GATEWAY_MEMBERS} member gateways already`)
    const joinedAt = nowIso()
    await this.db.put(`members/${inv.id}/${member}`, { joinedAt })
    const next = { ...inv, members: [...inv.members, { key: member, joinedAt }] }
    this.remember(next)
    this.log.info({ invite: inv.id, role: inv.role, member }, 'joined with an invite')
    return publicInvite(next)
  }
}
