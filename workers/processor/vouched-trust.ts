import type Hyperbee from 'hyperbee'
import { Facility } from '../../facilities/facility.js'
import { Serial } from '../../facilities/lib/serial.js'
import type { Logger } from '../../facilities/log.facility.js'
import type { StoreFacility } from '../../facilities/store.facility.js'
import { MeshError } from '../../kernel/errors.js'
import { MAX_GATEWAY_MEMBERS } from '../../kernel/invite.js'
import { HEX32, isRecord } from '../../kernel/util.js'

/**
 * Trust delegation (docs/security.md): a gateway a processor trusts by its own configuration
 * (`firewall.trustedGateways`, its invite's gateways, the mesh secret's gateways) — a voucher —
 * may vouch for other gateways with `trust { gateways }`, and the processor serves them too.
 * Each call gives the voucher's whole set, replacing the one before (a revoke is a smaller
 * set). Vouched-for gateways cannot vouch in turn: trust never chains. Kept in the processor's
 * `worker` bee as `vouched/<voucher>` when it has a store, so a restart keeps them.
 */

/** Gateways one voucher may vouch for (an issuing gateway admits no more gateway members). */
export const MAX_VOUCHED = MAX_GATEWAY_MEMBERS
/**
 * A vouched set lasts this long after the voucher last sent it: the voucher re-sends it well
 * within (TrustPush), so a revoke that could not reach this processor (it was away, or its
 * voucher stopped using it) still ends the vouched gateway's access within this bound.
 */
export const VOUCH_TTL_MS = 10 * 60_000
const SWEEP_MS = 30_000
const PREFIX = 'vouched/'

interface VouchedRecord {
  gateways: string[]
  at: string
}

export interface VouchedTrustOptions {
  /** Whether a hex key is trusted by the processor's own configuration (may vouch). */
  isVoucher(key: string): boolean
  /** The processor's store, or null (then vouched sets last until it stops). */
  store: () => StoreFacility | null
  log: () => Logger
  /** Keys that were vouched for and are no more (after a `set`): close their connections. */
  onRemoved(keys: string[]): void
}

/** The gateways a `trust` payload names. @throws ERR_BAD_REQUEST */
export function parseTrust(payload: unknown): string[] {
  const list = isRecord(payload) ? payload.gateways : undefined
  if (!Array.isArray(list) || list.length > MAX_VOUCHED)
    throw MeshError.badRequest(`request.gateways: a list of at most ${MAX_VOUCHED} gateway keys`)
  const keys = new Set<string>()
  for (const k of list) {
    if (typeof k !== 'string' || !HEX32.test(k.toLowerCase()))
      throw MeshError.badRequest('request.gateways: 64-hex-character keys')
    keys.add(k.toLowerCase())
  }
  return [...keys].sort()
}

export class VouchedTrust extends Facility {
  readonly name = 'vouched-trust'
  /** Vouched-for keys by voucher. */
  private readonly sets = new Map<string, Set<string>>()
  /** Vouchers per vouched-for key: the union, counted. */
  private readonly union = new Map<string, number>()
  private readonly serial = new Serial()
  /** When each voucher's set was last sent (ms since the epoch). */
  private readonly sentAt = new Map<string, number>()
  private sweepTimer: NodeJS.Timeout | null = null
  private bee: Hyperbee | null = null

  constructor(private readonly opts: VouchedTrustOptions) {
    super()
  }

  protected override async _open(): Promise<void> {
    this.sweepTimer = setInterval(() => this.expire(), SWEEP_MS)
    this.sweepTimer.unref()
    const store = this.opts.store()
    if (!store) return
    const bee = await store.bee('worker')
    let ignored = 0
    for await (const { key, value } of bee.createReadStream<VouchedRecord>({ gte: PREFIX, lt: 'vouched0' })) {
      const voucher = String(key).slice(PREFIX.length)
      const at = Date.parse(value?.at ?? '')
      // A voucher the configuration no longer trusts vouches for nobody; an old set has expired.
      if (
        !this.opts.isVoucher(voucher) ||
        !Array.isArray(value?.gateways) ||
        !(at > Date.now() - VOUCH_TTL_MS)
      )
        ignored++
      else {
        this.apply(
          voucher,
          value.gateways.filter((k) => typeof k === 'string' && HEX32.test(k)),
        )
        this.sentAt.set(voucher, at)
      }
    }
    this.bee = bee
    if (this.union.size || ignored)
      this.opts.log().info({ vouched: this.union.size, ignored }, 'gateways vouched for by trusted gateways')
  }

  protected override async _close(): Promise<void> {
    if (this.sweepTimer) clearInterval(this.sweepTimer)
    this.sweepTimer = null
    await this.serial.idle()
    this.bee = null
  }

  /** Expires the sets their vouchers have not sent again within VOUCH_TTL_MS. */
  expire(now = Date.now()): void {
    for (const [voucher, at] of this.sentAt) {
      if (now - at < VOUCH_TTL_MS) continue
      this.sentAt.delete(voucher)
      const before = new Set(this.union.keys())
      this.apply(voucher, [])
      const removed = [...before].filter((k) => !this.union.has(k))
      this.opts.log().info({ voucher, removed }, 'a vouched set expired (its voucher did not renew it)')
      if (removed.length) this.opts.onRemoved(removed)
    }
  }

  /** Whether some voucher vouches for the gateway `key` (hex). */
  has(key: string): boolean {
    return this.union.has(key)
  }

  /** Every vouched-for key. */
  keys(): string[] {
    return [...this.union.keys()]
  }

  /** The set `voucher` vouches for, sorted (empty: none). */
  of(voucher: string): string[] {
    return [...(this.sets.get(voucher) ?? [])].sort()
  }

  /**
   * Replaces the set `voucher` (hex) vouches for with `payload.gateways`, kept before it
   * answers. Keys no voucher vouches for any more are handed to `onRemoved`.
   * @throws ERR_FORBIDDEN (the caller is not trusted by configuration), ERR_BAD_REQUEST
   */
  set(voucher: string, payload: unknown): Promise<{ gateways: number }> {
    if (!this.opts.isVoucher(voucher))
      throw new MeshError(
        'ERR_FORBIDDEN',
        'only a gateway this processor trusts by its own configuration may vouch for others',
      )
    const gateways = parseTrust(payload)
    return this.serial.run(async () => {
      if (this.bee) {
        if (gateways.length)
          await this.bee.put(`${PREFIX}${voucher}`, { gateways, at: new Date().toISOString() })
        else await this.bee.del(`${PREFIX}${voucher}`)
      }
      const before = new Set(this.union.keys())
      this.apply(voucher, gateways)
      if (gateways.length) this.sentAt.set(voucher, Date.now())
      else this.sentAt.delete(voucher)
      const removed = [...before].filter((k) => !this.union.has(k))
      const added = gateways.filter((k) => !before.has(k))
      if (added.length || removed.length)
        this.opts.log().info({ voucher, added, removed }, 'gateways vouched for changed')
      if (removed.length) this.opts.onRemoved(removed)
      return { gateways: gateways.length }
    })
  }

  private apply(voucher: string, gateways: string[]): void {
    for (const k of this.sets.get(voucher) ?? []) {
      const n = (this.union.get(k) ?? 1) - 1
      if (n > 0) this.union.set(k, n)
      else this.union.delete(k)
    }
    if (gateways.length) this.sets.set(voucher, new Set(gateways))
    else this.sets.delete(voucher)
    for (const k of gateways) this.union.set(k, (this.union.get(k) ?? 0) + 1)
  }
}
