import type { Logger } from '../../facilities/log.facility.js'
import { MeshError } from '../../kernel/errors.js'
import type { HealthCheck } from '../../kernel/wire.js'

/** Who drained a processor, and since when (in its `status`). */
export interface MaintenanceView {
  since: number
  by: string
}

/** The `maintenance` RPC payload from a gateway: drain (true) or undrain (false). */
function parseDrainPayload(payload: unknown): { draining: boolean; actor: string } {
  const p = (payload ?? {}) as { draining?: unknown; actor?: unknown }
  if (typeof p.draining !== 'boolean') throw MeshError.badRequest('draining: true or false')
  const actor = typeof p.actor === 'string' ? p.actor.slice(0, 64) : ''
  return { draining: p.draining, actor }
}

/**
 * A processor drained for maintenance: it takes no new generation (a request that reaches it
 * anyway is refused as `draining`, which a gateway sends elsewhere without holding it against
 * the processor), finishes those it runs, and says `draining` in its `status`, so gateways stop
 * choosing it. Unlike a stop, it stays up, announced and reachable, and `undrain` brings it
 * back. Set by a trusted gateway (`maintenance` RPC, from an admin's `llm-mesh processor
 * drain`), by SIGUSR2 (a toggle) or at start (`draining` in the config, `--drain`). Not kept
 * across restarts: a restarted processor serves unless started drained.
 */
export class Maintenance {
  private view: MaintenanceView | null = null

  constructor(
    private readonly log: () => Logger,
    startDrained: boolean,
  ) {
    if (startDrained) this.view = { since: Date.now(), by: 'config' }
  }

  get on(): boolean {
    return this.view !== null
  }

  /** Drains (`on`) or undrains; says whether that changed anything. */
  set(on: boolean, by: string): boolean {
    if (on === this.on) return false
    this.view = on ? { since: Date.now(), by } : null
    this.log().info(
      { by },
      on ? 'drained for maintenance: taking no new work' : 'undrained: taking work again',
    )
    return true
  }

  /** A gateway's `maintenance` call: the caller and the admin it acts for name who did it. */
  fromGateway(payload: unknown, caller: Buffer, active: () => number): { draining: boolean; active: number } {
    const { draining, actor } = parseDrainPayload(payload)
    const gateway = `gateway ${caller.toString('hex').slice(0, 16)}`
    this.set(draining, actor ? `${actor} via ${gateway}` : gateway)
    return { draining: this.on, active: active() }
  }

  /** Refuses new work while drained. @throws ERR_UNAVAILABLE with `draining` */
  refuseNewWork(): void {
    if (this.view) {
      throw new MeshError('ERR_UNAVAILABLE', 'this processor is drained for maintenance', { draining: true })
    }
  }

  /** The `maintenance` field of `status`, while drained. */
  status(): { maintenance?: MaintenanceView } {
    return this.view ? { maintenance: this.view } : {}
  }

  /** Not ready while drained. */
  checks(): HealthCheck[] {
    if (!this.view) return []
    const since = new Date(this.view.since).toISOString()
    return [{ name: 'maintenance', ok: false, detail: `drained by ${this.view.by} since ${since}` }]
  }

  /** `signal` (SIGUSR2 by default) toggles: drain, then undrain. Returns the listener's removal. */
  toggleOn(signal: NodeJS.Signals = 'SIGUSR2'): () => void {
    const toggle = () => this.set(!this.on, signal)
    process.on(signal, toggle)
    return () => process.off(signal, toggle)
  }
}
