import type { Logger } from '../../facilities/log.facility.js'
import type { NetFacility } from '../../facilities/net/net.facility.js'
import type { RouterFacility } from '../../facilities/router/router.facility.js'
import { MeshError } from '../../kernel/errors.js'
import { HEX32, isRecord } from '../../kernel/util.js'

/**
 * `meshMembers` (docs/architecture.md, Joining by invite): a gateway that joined with a gateway
 * invite asks the gateways that issued it which processors are the mesh's (those they admit),
 * and admits them too under `processors.admission` 'members'. Asked at start, every
 * MESH_MEMBERS_REFRESH_MS, and when a processor it does not know answers a probe (at most one
 * ask per MESH_MEMBERS_ASK_MS). An issuer that refuses (the invite was revoked) empties its
 * list; one that does not answer keeps its last list until it answers again.
 */

/** Processor keys one answer carries at most. */
export const MAX_MESH_MEMBERS = 10_000
export const MESH_MEMBERS_REFRESH_MS = 30_000
export const MESH_MEMBERS_ASK_MS = 5_000
export const MESH_MEMBERS_TIMEOUT_MS = 5_000

/** What `meshMembers` answers. */
export interface MeshMembersReply {
  mesh: string
  processors: string[]
}

/** The processor keys of a `meshMembers` answer, bounded. @throws ERR_BAD_REQUEST */
export function parseMeshMembers(reply: unknown): string[] {
  const list = isRecord(reply) ? reply.processors : undefined
  if (!Array.isArray(list)) throw MeshError.badRequest('meshMembers: expected { processors: [...] }')
  return list.slice(0, MAX_MESH_MEMBERS).filter((k): k is string => typeof k === 'string' && HEX32.test(k))
}

export interface MeshMembersDeps {
  /** Hex keys of the gateways that issued this gateway's invite. */
  issuers: string[]
  net(): NetFacility
  /** The router, or null before it opened. */
  router(): RouterFacility | null
  /** Whether a processor is admitted by this gateway's own rules (then it is never dropped here). */
  admitsOwn(key: string): boolean
  log(): Logger
  refreshMs?: number
}

/** The joined gateway's side: the processors its issuers list, kept fresh. */
export class MeshMembersClient {
  private readonly byIssuer = new Map<string, Set<string>>()
  private union = new Set<string>()
  private timer: NodeJS.Timeout | null = null
  private fetching: Promise<void> | null = null
  private askedAt = 0
  private stopped = false
  private readonly failing = new Set<string>()

  constructor(private readonly deps: MeshMembersDeps) {}

  /** Asks once (bounded by MESH_MEMBERS_TIMEOUT_MS), then every `refreshMs`. */
  start(): Promise<void> {
    this.timer = setInterval(() => void this.fetch(), this.deps.refreshMs ?? MESH_MEMBERS_REFRESH_MS)
    this.timer.unref()
    return this.fetch()
  }

  stop(): void {
    this.stopped = true
    if (this.timer) clearInterval(this.timer)
    this.timer = null
  }

  /** Whether an issuer lists the processor `key` (hex). */
  admits(key: string): boolean {
    return this.union.has(key)
  }

  /** Processors the issuers list now. */
  keys(): string[] {
    return [...this.union]
  }

  /** A processor nobody admits answered: ask the issuers again, unless asked lately. */
  unknown(_key: string): void {
    if (Date.now() - this.askedAt >= MESH_MEMBERS_ASK_MS) void this.fetch()
  }

  /** Asks every issuer now (one ask at a time); never rejects. */
  fetch(): Promise<void> {
    if (this.stopped) return Promise.resolve()
    this.fetching ??= this.fetchAll().finally(() => {
      this.fetching = null
    })
    return this.fetching
  }

  private async fetchAll(): Promise<void> {
    this.askedAt = Date.now()
    await Promise.all(this.deps.issuers.map((issuer) => this.fetchOne(issuer)))
    if (this.stopped) return
    const before = this.union
    const next = new Set<string>()
    for (const set of this.byIssuer.values()) for (const k of set) next.add(k)
    this.union = next
    const added = [...next].filter((k) => !before.has(k))
    const removed = [...before].filter((k) => !next.has(k))
    if (added.length || removed.length)
      this.deps
        .log()
        .info({ added: added.length, removed: removed.length, processors: next.size }, 'mesh members changed')
    // Before the router opens (the first ask, at start) its first lookup probes them anyway.
    const router = this.deps.router()
    if (!router) return
    for (const k of added) router.consider(Buffer.from(k, 'hex'))
    for (const k of removed) {
      if (!this.deps.admitsOwn(k))
        router.dropById(k, 'the issuing gateway no longer lists it as a mesh member')
    }
  }

  private async fetchOne(issuer: string): Promise<void> {
    try {
      const conn = this.deps.net().peer(Buffer.from(issuer, 'hex'), issuer)
      await conn.opened(MESH_MEMBERS_TIMEOUT_MS)
      const reply = await conn.request('meshMembers', null, { timeout: MESH_MEMBERS_TIMEOUT_MS })
      this.byIssuer.set(issuer, new Set(parseMeshMembers(reply)))
      if (this.failing.delete(issuer)) this.deps.log().info({ issuer }, 'the issuing gateway answers again')
    } catch (err) {
      const e = MeshError.from(err)
      if (e.code === 'ERR_FORBIDDEN') {
        // Not a member any more (the invite was revoked): its processors are not ours to use.
        if (this.byIssuer.get(issuer)?.size !== 0)
          this.deps
            .log()
            .warn({ issuer, why: e.reason }, 'the issuing gateway no longer counts this gateway as a member')
        this.byIssuer.set(issuer, new Set())
        return
      }
      if (!this.failing.has(issuer))
        this.deps
          .log()
          .warn(
            { issuer, code: e.code, why: e.reason },
            'could not ask the issuing gateway for the mesh members; keeping its last list',
          )
      this.failing.add(issuer)
    }
  }
}
