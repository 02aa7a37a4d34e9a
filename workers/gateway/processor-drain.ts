import type { Identity } from '../../facilities/auth/identity.js'
import type { Logger } from '../../facilities/log.facility.js'
import type { NetFacility } from '../../facilities/net/net.facility.js'
import type { MethodTable } from '../../facilities/net/rpc-server.js'
import type { RouterFacility } from '../../facilities/router/router.facility.js'
import { MeshError } from '../../kernel/errors.js'
import type { ProcessorState } from '../../kernel/wire.js'

const DRAIN_TIMEOUT_MS = 5_000

/** What `processorDrain` answers: the processor's state as this gateway now sees it. */
export interface DrainReply {
  processor: string
  draining: boolean
  /** Generations it still runs (all gateways): they finish; nothing new is sent. */
  active: number
  state: ProcessorState
}

export interface ProcessorDrainOptions {
  router: () => RouterFacility
  net: () => NetFacility
  log: () => Logger
  /** The caller, an admin. @throws ERR_AUTH_*, ERR_FORBIDDEN */
  requireAdmin: (payload: unknown) => Identity
}

function parseDrain(payload: unknown): { processor: string; draining: boolean } {
  const p = (payload ?? {}) as { processor?: unknown; draining?: unknown }
  if (typeof p.processor !== 'string')
    throw MeshError.badRequest('processor: a public key in hex (or a prefix)')
  if (p.draining !== undefined && typeof p.draining !== 'boolean')
    throw MeshError.badRequest('draining: true (drain) or false (undrain)')
  return { processor: p.processor, draining: p.draining ?? true }
}

/**
 * An admin drains a processor for maintenance through a gateway (`llm-mesh processor drain
 * KEY`): the gateway asks the processor (`maintenance`), which refuses new work and says so
 * in its status; this gateway sees it at once (a heartbeat out of turn), the others at their
 * next heartbeat (and meanwhile a request they send is refused as draining and goes elsewhere,
 * not counted against it). In-flight generations finish. `undrain` reverses it.
 */
export class ProcessorDrain {
  constructor(private readonly opts: ProcessorDrainOptions) {}

  methods(): MethodTable {
    return {
      // Admins only.
      processorDrain: (payload) => this.drain(payload),
    }
  }

  private async drain(payload: unknown): Promise<DrainReply> {
    const actor = this.opts.requireAdmin(payload)
    const { processor, draining } = parseDrain(payload)
    const router = this.opts.router()
    const entry = router.find(processor)
    if (entry.state === 'unreachable') {
      throw new MeshError('ERR_UNAVAILABLE', `processor ${entry.id.slice(0, 16)} is unreachable`)
    }
    const reply = await this.opts
      .net()
      .peer(entry.publicKey)
      .request<{ draining: boolean; active: number }>(
        'maintenance',
        { draining, actor: actor.username },
        { timeout: DRAIN_TIMEOUT_MS },
      )
    await router.beatNow(entry)
    this.opts
      .log()
      .info(
        { processor: entry.id, draining, by: actor.username, active: reply.active },
        draining ? 'processor drained for maintenance' : 'processor undrained',
      )
    return { processor: entry.id, draining: reply.draining, active: reply.active, state: entry.state }
  }
}
