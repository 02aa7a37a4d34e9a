import type { AuditAction, AuditDetails } from '../../kernel/audit.js'
import type { ErrorCode } from '../../kernel/errors.js'

/** A failed action as the digest takes it. */
export interface FailedAction {
  action: AuditAction
  actor: string
  target: string | null
  outcome: ErrorCode
  requestId?: string
  /** The caller's peer (16 hex of its RPC key), counted per window rather than written each time. */
  peer?: string
  details?: AuditDetails
}

/** Distinct (action, actor, target, outcome) groups a window tracks; past it, failures share one group. */
export const MAX_GROUPS = 256
/** Distinct peers a group counts. */
const MAX_PEERS = 1024

interface Group {
  first: FailedAction
  startedAt: number
  /** The time of the first failure's entry (what the summary's `since` says). */
  since: number
  repeated: number
  peers: Set<string>
}

/**
 * Bounds what a flood of failures (wrong passwords, refused logins, forbidden calls) costs the
 * audit log: the first failure of a group — same action, actor, target and outcome — is written
 * at once, with its peer; the failures that follow within `windowMs` of it are only counted, and
 * written as one summary entry when the window ends (`repeated`, `since`, distinct `peers`).
 * At most MAX_GROUPS groups are open at once; failures past that all fall into one group
 * (actor `*`, no target). So a window costs at most 2 × (MAX_GROUPS + 1) entries, however many
 * failures come, and no failure goes uncounted.
 */
export class FailureDigest {
  private readonly groups = new Map<string, Group>()

  constructor(
    private readonly windowMs: number,
    /** Writes an entry (not awaited by the caller of `add`); its time, or null when it was not written. */
    private readonly write: (f: FailedAction) => number | null,
  ) {}

  get open(): number {
    return this.groups.size
  }

  add(f: FailedAction, now = Date.now()): void {
    let key = `${f.action}\n${f.actor}\n${f.target ?? ''}\n${f.outcome}`
    let failure = f
    if (!this.groups.has(key) && this.groups.size >= MAX_GROUPS) {
      key = `${f.action}\n*\n\n${f.outcome}`
      failure = {
        action: f.action,
        actor: '*',
        target: null,
        outcome: f.outcome,
        details: { overflow: true },
      }
      if (f.peer) failure.peer = f.peer
    }
    const group = this.groups.get(key)
    if (!group) {
      const group: Group = { first: failure, startedAt: now, since: now, repeated: 0, peers: new Set() }
      this.groups.set(key, group)
      group.since = this.write(failure) ?? now
      return
    }
    group.repeated++
    if (f.peer && group.peers.size < MAX_PEERS) group.peers.add(f.peer)
  }

  /** Ends the windows that are over (all of them with `all`), writing a summary for each that saw repeats. */
  close(now = Date.now(), all = false): void {
    for (const [key, g] of this.groups) {
      if (!all && g.startedAt + this.windowMs > now) continue
      this.groups.delete(key)
      if (g.repeated === 0) continue
      const { peer: _peer, details, requestId: _requestId, ...rest } = g.first
      this.write({
        ...rest,
        details: { ...details, repeated: g.repeated, since: g.since, peers: g.peers.size },
      })
    }
  }
}
