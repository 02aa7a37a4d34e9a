import { timingSafeEqual } from 'node:crypto'
import type { InvitesFacility } from '../../facilities/auth/invites.js'
import type { Logger } from '../../facilities/log.facility.js'
import type { GatewayConfig } from '../../kernel/config.js'
import { isLoopbackBootstrap } from '../../kernel/config-bootstrap.js'
import { processorProof } from '../../kernel/identity.js'
import { HEX32 } from '../../kernel/util.js'

/** Keys remembered (as proven, or as refused and logged) at most; past it the sets start over. */
const MAX_REMEMBERED = 10_000

/** Processors admitted on another gateway's word: the issuers of a joined gateway's invite. */
export interface DelegatedMembers {
  admits(key: string): boolean
  /** A processor nobody admits answered: the issuers may know it by now. */
  unknown(key: string): void
}

/**
 * Which processors a gateway uses (`processors.admission`). 'any': whoever announces on the
 * mesh's topic. 'members': keys in `processors.trusted`, peers that joined with a live invite,
 * processors proving the gateway's `meshSecret` (`meshProof` in their status), and, on a
 * gateway that joined with a gateway invite, the processors its issuers list (`meshMembers`).
 * A refused processor is logged once, with the reason.
 */
export class ProcessorAdmission {
  readonly mode: 'any' | 'members'
  private readonly trusted: Set<string>
  /** Keys that proved the mesh secret (the proof is bound to the key: once is enough). */
  private readonly proven = new Set<string>()
  private readonly refusedLogged = new Set<string>()

  constructor(
    private readonly config: GatewayConfig,
    private readonly invites: () => InvitesFacility | null,
    private readonly log: () => Logger,
    private readonly delegated: () => DelegatedMembers | null = () => null,
  ) {
    const { admission } = config.processors
    this.mode = admission ?? (isLoopbackBootstrap(config.bootstrap) ? 'any' : 'members')
    this.trusted = new Set(config.processors.trusted.map((k) => k.toLowerCase()))
  }

  /** Says at start which rule applies, and warns when nobody could ever be admitted. */
  announce(): void {
    const set = this.config.processors.admission !== undefined
    const why = set
      ? 'processors.admission'
      : isLoopbackBootstrap(this.config.bootstrap)
        ? 'default on a loopback bootstrap'
        : 'default'
    if (this.mode === 'any') {
      this.log().info(
        { admission: 'any', why },
        'processor admission: any processor that announces on the mesh',
      )
      return
    }
    const ways = [
      this.trusted.size ? `${this.trusted.size} trusted key(s)` : null,
      this.invites() ? 'members joined by invite' : null,
      this.config.meshSecret ? 'processors proving the mesh secret' : null,
      this.config.invite ? 'the mesh members the issuing gateway lists' : null,
    ].filter(Boolean)
    this.log().info({ admission: 'members', why, admits: ways }, 'processor admission: members only')
    if (!ways.length)
      this.log().warn(
        'processor admission is "members" but this gateway has no trusted processors, no store for invites and no mesh secret: it can use no processor',
      )
  }

  /** Whether `key` (hex) may be used, from what is known without its status. */
  admits(key: string): boolean {
    return this.admitsOwn(key) || this.delegated()?.admits(key) === true
  }

  /** `admits`, by this gateway's own rules only (not on an issuing gateway's word). */
  admitsOwn(key: string): boolean {
    return (
      this.mode === 'any' ||
      this.trusted.has(key) ||
      this.proven.has(key) ||
      this.invites()?.isMember(key, 'processor') === true
    )
  }

  /** Processors admitted by this gateway's own rules, as far as keys go (not under 'any'). */
  memberKeys(): string[] {
    return [...new Set([...this.trusted, ...this.proven, ...(this.invites()?.memberKeys('processor') ?? [])])]
  }

  /** Why a processor may not be used, or null when it may. */
  refusal(publicKey: Buffer, status: { meshProof?: unknown }): string | null {
    const key = publicKey.toString('hex')
    if (this.admits(key) || this.provesSecret(key, status.meshProof)) {
      this.refusedLogged.delete(key)
      return null
    }
    this.delegated()?.unknown(key)
    const why = 'not a member of this mesh (no live invite, not in processors.trusted, no mesh secret proof)'
    if (!this.refusedLogged.has(key)) {
      if (this.refusedLogged.size >= MAX_REMEMBERED) this.refusedLogged.clear()
      this.refusedLogged.add(key)
      this.log().warn({ processor: key, why }, 'processor not admitted: not using it')
    }
    return why
  }

  private provesSecret(key: string, proof: unknown): boolean {
    const secret = this.config.meshSecret
    if (!secret || typeof proof !== 'string' || !HEX32.test(proof)) return false
    const want = Buffer.from(processorProof(secret, this.config.mesh, key), 'hex')
    if (!timingSafeEqual(want, Buffer.from(proof, 'hex'))) return false
    if (this.proven.size >= MAX_REMEMBERED) this.proven.clear()
    this.proven.add(key)
    return true
  }
}
