import type { Logger } from '../facilities/log.facility.js'
import type { NetFacility } from '../facilities/net/net.facility.js'
import type { StoreFacility } from '../facilities/store.facility.js'
import type { BaseConfig } from '../kernel/config.js'
import { MeshError } from '../kernel/errors.js'
import { decodeInvite, type Invite, type InviteRole } from '../kernel/invite.js'

/**
 * Joining a mesh with an invite token (docs/architecture.md, Joining by invite): a processor
 * (`processor --join`) or a gateway (`gateway --join`) redeems it with the gateways it names
 * before it announces itself.
 */

/** How long the issuing gateways get to answer a join, all told. */
export const JOIN_TIMEOUT_MS = 10_000
/** Where a worker notes the invites it joined with (in its store's `worker` bee). */
const JOINED_KEY = (id: string) => `joined/${id}`

const INVITE_CODES = new Set(['ERR_INVITE_INVALID', 'ERR_INVITE_EXPIRED', 'ERR_INVITE_REVOKED'])

/**
 * The invite of a worker's config (`invite`), checked against the rest of it: the token says
 * which mesh and bootstrap to join, and a config that names others is a mistake.
 * @throws ERR_INVITE_INVALID (malformed token or for another role), ERR_BAD_CONFIG
 */
export function configInvite(
  role: InviteRole,
  config: BaseConfig & { invite?: string | undefined },
): Invite | null {
  if (!config.invite) return null
  const invite = decodeInvite(config.invite)
  if (invite.role !== role)
    throw new MeshError('ERR_INVITE_INVALID', `this invite is for a ${invite.role}, not a ${role}`)
  if (invite.mesh !== config.mesh)
    throw MeshError.badConfig(`config.mesh: '${config.mesh}', but the invite is for mesh '${invite.mesh}'`)
  if (invite.bootstrap === 'public' && config.bootstrap !== 'public')
    throw MeshError.badConfig('config.bootstrap: the invite is for a mesh on the public DHT')
  return invite
}

/** `join` on one gateway, over a connection of its own. */
async function joinOnce(net: NetFacility, gateway: string, invite: Invite, timeoutMs: number): Promise<void> {
  const conn = net.dial(Buffer.from(gateway, 'hex'))
  try {
    await conn.opened(timeoutMs)
    await conn.request(
      'join',
      { id: invite.id, secret: invite.secret, role: invite.role },
      { timeout: timeoutMs },
    )
  } finally {
    conn.destroy()
  }
}

/**
 * `join` on one gateway, dialed again while time is left when it could not be reached: a
 * dial that failed at hole-punching goes through a relay the next time (facilities/net/relays.ts).
 */
async function joinOne(net: NetFacility, gateway: string, invite: Invite, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      return await joinOnce(net, gateway, invite, Math.max(1, deadline - Date.now()))
    } catch (err) {
      const code = MeshError.from(err).code
      if (code !== 'ERR_UNAVAILABLE' || deadline - Date.now() < 1_000) throw err
      await new Promise((r) => setTimeout(r, 250))
    }
  }
}

/**
 * Redeems an invite with the gateways it names, before the worker announces itself: once one
 * accepts, that gateway counts this worker as a member (a processor it uses, a gateway it
 * vouches for). A refusal (invalid, expired, revoked) is thrown, so the worker does not start.
 * A gateway that cannot be reached fails the first join; once joined (noted in the store), the
 * worker starts anyway (a processor is found on the DHT, as a member, when the gateway is back).
 * @throws ERR_INVITE_INVALID, ERR_INVITE_EXPIRED, ERR_INVITE_REVOKED, ERR_RATE_LIMITED,
 *   ERR_UNAVAILABLE / ERR_TIMEOUT (first join, no gateway reachable)
 */
export async function redeemInvite(opts: {
  invite: Invite
  net: NetFacility
  store: StoreFacility | null
  log: Logger
  timeoutMs?: number
}): Promise<string[]> {
  const { invite, net, store, log, timeoutMs = JOIN_TIMEOUT_MS } = opts
  const bee = store ? await store.bee('worker') : null
  const joinedBefore = (await bee?.get(JOINED_KEY(invite.id))) != null
  const results = await Promise.allSettled(invite.gateways.map((g) => joinOne(net, g, invite, timeoutMs)))
  const accepted = invite.gateways.filter((_, i) => results[i]?.status === 'fulfilled')
  const errors = results.flatMap((r) => (r.status === 'rejected' ? [MeshError.from(r.reason)] : []))
  if (accepted.length) {
    await bee?.put(JOINED_KEY(invite.id), { at: new Date().toISOString(), gateways: accepted })
    log.info({ invite: invite.id, gateways: accepted }, 'joined the mesh with an invite')
    return accepted
  }
  // A member that joined before and is only rate limited (someone else's failed joins) starts
  // as when the gateway is away; a refusal of the invite itself stops it.
  const refusal = errors.find(
    (e) => INVITE_CODES.has(e.code) || (e.code === 'ERR_RATE_LIMITED' && !joinedBefore),
  )
  if (refusal) throw refusal
  const first = errors[0] ?? new MeshError('ERR_UNAVAILABLE', 'no gateway to join')
  if (!joinedBefore) {
    throw new MeshError(
      first.code,
      `could not reach the gateway that issued the invite: ${first.reason}`,
      first.details,
    )
  }
  log.warn(
    { err: first, invite: invite.id },
    'no gateway of the invite answered; serving as a member joined before',
  )
  return []
}
