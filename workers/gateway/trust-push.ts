import type { InvitesFacility } from '../../facilities/auth/invites.js'
import type { Logger } from '../../facilities/log.facility.js'
import type { NetFacility } from '../../facilities/net/net.facility.js'
import type { RouterFacility } from '../../facilities/router/router.facility.js'
import { MeshError } from '../../kernel/errors.js'
import { VOUCH_TTL_MS } from '../processor/vouched-trust.js'

/** How long one processor gets to take a `trust` push (the connection, then the call). */
export const TRUST_PUSH_TIMEOUT_MS = 5_000
/** Processors pushed to at once when the set changes. */
const PUSH_CONCURRENCY = 16
/** Every processor in use hears the set again this often: vouched sets expire (VOUCH_TTL_MS). */
export const TRUST_RENEW_MS = VOUCH_TTL_MS / 4
/** Processors whose last failure was logged, remembered at most (then it starts over). */
const MAX_LOGGED = 10_000

export interface TrustPushDeps {
  net(): NetFacility
  router(): RouterFacility
  invites(): InvitesFacility | null
  log(): Logger
}

/**
 * The issuing gateway's side of trust delegation (docs/security.md): it tells each processor
 * it uses which gateways it vouches for — the live members of its gateway invites — with
 * `trust { gateways }`, the whole set each time. Sent when a processor is admitted (or
 * re-admitted, or restarted) and to all of them when the set changes (a gateway joined, an
 * invite was revoked). Never on a request's path; a failure is logged and the push is tried
 * again at the processor's next admission. A gateway that never made a gateway invite pushes
 * nothing (after its first, it pushes even an empty set: that is how a revoke propagates).
 */
export class TrustPush {
  /** A push per processor not started yet (a later change rides on it), and the one running. */
  private readonly queued = new Map<string, Promise<void>>()
  private readonly running = new Map<string, Promise<void>>()
  /** Last failure code logged per processor, so a failing one is not logged at every push. */
  private readonly logged = new Map<string, string>()

  private renewTimer: NodeJS.Timeout | null = null

  constructor(private readonly deps: TrustPushDeps) {}

  /** Renews every processor's set every TRUST_RENEW_MS, before it expires there. */
  start(): void {
    this.renewTimer = setInterval(() => void this.pushAll(), TRUST_RENEW_MS)
    this.renewTimer.unref()
  }

  stop(): void {
    if (this.renewTimer) clearInterval(this.renewTimer)
    this.renewTimer = null
  }

  /** The gateways this one vouches for (hex, sorted). */
  members(): string[] {
    return (this.deps.invites()?.memberKeys('gateway') ?? []).sort()
  }

  private get active(): boolean {
    return this.deps.invites()?.everMade('gateway') ?? false
  }

  /** A processor was admitted, re-admitted or restarted: tell it (in the background). */
  admitted(publicKey: Buffer): void {
    if (this.active) void this.push(publicKey)
  }

  /** Tells every processor in use; resolves once each answered or failed (never rejects). */
  async pushAll(): Promise<void> {
    if (!this.active) return
    const targets = this.deps
      .router()
      .live()
      .map((e) => e.publicKey)
    let next = 0
    const worker = async () => {
      while (next < targets.length) await this.push(targets[next++] as Buffer)
    }
    await Promise.all(Array.from({ length: Math.min(PUSH_CONCURRENCY, targets.length) }, worker))
  }

  /** One push to a processor, after the one running there; pushes asked for meanwhile are one. */
  push(publicKey: Buffer): Promise<void> {
    const id = publicKey.toString('hex')
    const waiting = this.queued.get(id)
    if (waiting) return waiting
    const before = this.running.get(id) ?? Promise.resolve()
    const next = before.then(() => {
      this.queued.delete(id)
      const sent = this.send(publicKey, id)
      this.running.set(id, sent)
      return sent.finally(() => {
        if (this.running.get(id) === sent) this.running.delete(id)
      })
    })
    this.queued.set(id, next)
    return next
  }

  /** Sends the set as it is now; never throws. */
  private async send(publicKey: Buffer, id: string): Promise<void> {
    const gateways = this.members()
    try {
      const conn = this.deps.net().peer(publicKey, id)
      await conn.opened(TRUST_PUSH_TIMEOUT_MS)
      await conn.request('trust', { gateways }, { timeout: TRUST_PUSH_TIMEOUT_MS })
      if (this.logged.delete(id)) this.deps.log().info({ processor: id }, 'trust push works again')
      this.deps
        .log()
        .debug({ processor: id, gateways: gateways.length }, 'told a processor the gateways vouched for')
    } catch (err) {
      const e = MeshError.from(err)
      if (this.logged.get(id) === e.code) return
      if (this.logged.size >= MAX_LOGGED) this.logged.clear()
      this.logged.set(id, e.code)
      this.deps
        .log()
        .warn(
          { processor: id, code: e.code, why: e.reason },
          'could not tell a processor which gateways this one vouches for; trying again at its next admission',
        )
    }
  }
}
