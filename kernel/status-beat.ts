/**
 * Versioned `status` between a gateway and a processor: the heartbeat sends the version of the
 * processor's status it holds, and a processor whose description (models, capacity, weight,
 * backend, draining…) has not changed since answers with its load only, a reply of ~90 bytes
 * instead of the full status (~600 bytes and more with the model list). Both ends stay
 * compatible with peers that know nothing of it: a gateway that sends `null` gets the full
 * status, and a processor that ignores `since` answers the full status, which the gateway
 * takes as it always did.
 */

/** The `status` request payload of a heartbeat: the version the gateway holds (absent: none). */
export interface StatusRequest {
  since?: string
}

/**
 * The reply to a heartbeat whose `since` is current: the load that changes with every
 * request, nothing else. Told apart from a full status by its missing `role`.
 */
export interface StatusBeat {
  /** The version the caller holds, repeated. */
  v: string
  active: number
  /** As in the full status: of `active`, those the caller is not waiting for. */
  activeOthers?: number
  queued: number
  tokensPerSecond: number
}

/** Fields of a processor's status that change with load or time: not part of its version. */
const VOLATILE = new Set([
  'uptimeMs',
  'inflight',
  'active',
  'activeOthers',
  'queued',
  'served',
  'failed',
  'tokensPerSecond',
  'v',
])

/** What a `status` payload asks for: the version the caller holds, or '' (none, or an old caller). */
export function sinceOf(payload: unknown): string {
  if (payload === null || typeof payload !== 'object') return ''
  const since = (payload as StatusRequest).since
  return typeof since === 'string' ? since : ''
}

/**
 * A processor's status versions: `<instance>.<n>`, n advancing whenever the description part of
 * its status changes (a new process starts a new instance, so versions never repeat across
 * restarts). One per processor, shared by all its callers.
 */
export class StatusVersions {
  private readonly instance: string
  private n = 0
  private described = ''

  constructor(instance: string) {
    this.instance = instance
  }

  /** The version of `full` (advances when its description differs from the last one seen). */
  versionOf(full: Record<string, unknown>): string {
    const described = JSON.stringify(full, (key, value) => (VOLATILE.has(key) ? undefined : value))
    if (described !== this.described) {
      this.described = described
      this.n++
    }
    return `${this.instance}.${this.n}`
  }

  /** What to answer a `status` asking with `payload`: the load alone when the caller is current, else `full` with its version. */
  reply(full: Record<string, unknown>, payload: unknown): Record<string, unknown> {
    const v = this.versionOf(full)
    if (sinceOf(payload) !== v) return { ...full, v }
    const beat: StatusBeat = {
      v,
      active: full.active as number,
      queued: full.queued as number,
      tokensPerSecond: full.tokensPerSecond as number,
    }
    if (typeof full.activeOthers === 'number') beat.activeOthers = full.activeOthers
    return beat as unknown as Record<string, unknown>
  }
}
