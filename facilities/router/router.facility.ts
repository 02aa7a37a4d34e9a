import { EventEmitter } from 'node:events'
import { MeshError } from '../../kernel/errors.js'
import type { ProcessorView } from '../../kernel/wire.js'
import { Facility } from '../facility.js'
import type { Logger } from '../log.facility.js'
import type { NetFacility } from '../net/net.facility.js'
import { Breakers } from './breaker.js'
import { type Admission, Discovery } from './discovery.js'
import type { ModelWaiting } from './fair-queue.js'
import type { ProcessorEntry } from './processor-entry.js'
import { Registry, type RegistryConfig, type RoutingConfig } from './registry.js'
import { type Lease, type LeaseOptions, Scheduler } from './scheduler.js'

export type { Admission } from './discovery.js'
export type { ModelWaiting } from './fair-queue.js'
export type { ProcessorEntry } from './processor-entry.js'
export type { RegistryConfig, RoutingConfig } from './registry.js'
export type { AnswerStats, Lease, LeaseOptions, Verdict } from './scheduler.js'

/**
 * The gateway's live view of processors and its scheduler: discovery keeps the
 * registry of processors (lookups, probes, heartbeats, re-dials, drops), the
 * scheduler leases their slots (strategies, the fair queue, breakers, retry
 * classification). Emits `added`, `unreachable`, `restarted` and `drop` with the entry.
 */
export class RouterFacility extends Facility {
  readonly name = 'router'
  readonly events = new EventEmitter()
  private readonly routing: RoutingConfig
  private readonly registry = new Registry()
  private readonly breakers: Breakers
  private readonly discovery: Discovery
  private readonly scheduler: Scheduler

  constructor(opts: {
    net: NetFacility
    config: RegistryConfig
    routing: RoutingConfig
    logger: Logger
    /** Which processors may be used (default: all). */
    admission?: Admission
    /** Told how long each request that queued waited for its slot, in seconds. */
    onQueueWait?: (seconds: number) => void
  }) {
    super()
    const { net, config, routing, logger } = opts
    this.routing = routing
    const pump = () => this.scheduler.pump()
    this.breakers = new Breakers({ routing, logger, onCooldownEnd: pump })
    this.discovery = new Discovery({
      net,
      registry: this.registry,
      config,
      logger,
      events: this.events,
      breakers: this.breakers,
      onChange: pump,
      ...(opts.admission ? { admission: opts.admission } : {}),
    })
    this.scheduler = new Scheduler({
      routing,
      registry: this.registry,
      breakers: this.breakers,
      discovery: this.discovery,
      ...(opts.onQueueWait ? { onQueueWait: opts.onQueueWait } : {}),
    })
  }

  protected override async _open(): Promise<void> {
    this.discovery.start()
  }

  protected override async _close(): Promise<void> {
    const stopping = this.discovery.stop()
    this.breakers.close()
    this.scheduler.queue.clear(new MeshError('ERR_UNAVAILABLE', 'the gateway is stopping'))
    await stopping
    this.registry.clear()
  }

  get size(): number {
    return this.registry.size
  }

  /** Requests waiting for a slot. */
  get queued(): number {
    return this.scheduler.queue.waiting
  }

  /** Per model with requests waiting for a slot: how many, and since when the oldest waits. */
  waitingByModel(): Map<string, ModelWaiting> {
    return this.scheduler.queue.waitingByModel()
  }

  get strategy(): string {
    return this.routing.strategy
  }

  list(): ProcessorView[] {
    return this.registry.list()
  }

  entriesFor(model: string): ProcessorEntry[] {
    return this.registry.entriesFor(model)
  }

  /** Processors that answer (serving or draining): those to ask for models and running models. */
  live(): ProcessorEntry[] {
    return this.registry.live()
  }

  /** Whether a processor other than `except` could take a request for `model` now or soon. */
  hasOtherFor(model: string, except: string): boolean {
    return this.registry.hasOtherFor(model, except)
  }

  /** One DHT lookup now (shared by concurrent callers); new processors are probed before use. */
  refresh(): Promise<void> {
    return this.discovery.refresh()
  }

  /** Whether some processor serves or ever served `model` (no lookup). */
  knowsModel(model: string): boolean {
    return this.registry.isKnownModel(model)
  }

  /**
   * Refuses a model that no processor serves or ever served (after a fresh lookup, at most
   * one a second), before the request is admitted or recorded.
   * @throws ERR_MODEL_NOT_FOUND
   */
  async requireModel(model: string): Promise<void> {
    if (this.registry.isKnownModel(model)) return
    await this.discovery.refreshIfStale()
    if (!this.registry.isKnownModel(model)) throw MeshError.modelNotFound(model)
  }

  /**
   * A slot on a processor for `model` (see `Scheduler.lease`); report the request's one
   * outcome on it.
   * @throws ERR_MODEL_NOT_FOUND, ERR_NO_PROCESSOR, ERR_BUSY, or `cancel`'s reason
   */
  lease(model: string, opts?: LeaseOptions): Promise<Lease> {
    return this.scheduler.lease(model, opts)
  }

  /** Probes a processor now, whatever its backoff (e.g. it was just admitted). */
  consider(publicKey: Buffer): void {
    this.discovery.consider(publicKey)
  }

  /**
   * The processor whose hex key is `id` or starts with it (8 hex digits at least, matching one).
   * @throws ERR_BAD_REQUEST (not hex, too short, or more than one match), ERR_NOT_FOUND
   */
  find(id: string): ProcessorEntry {
    const prefix = id.toLowerCase()
    if (!/^[0-9a-f]{8,64}$/.test(prefix))
      throw MeshError.badRequest('processor: a public key in hex, or its first 8 hex digits at least')
    const found = [...this.registry.values()].filter((e) => e.id.startsWith(prefix))
    if (found.length > 1) throw MeshError.badRequest(`processor: '${id}' matches ${found.length} processors`)
    const entry = found[0]
    if (!entry) throw new MeshError('ERR_NOT_FOUND', `no processor '${id}' is known to this gateway`)
    return entry
  }

  /** A heartbeat now, out of turn (its state just changed), after one in flight (it may predate it). */
  async beatNow(entry: ProcessorEntry): Promise<void> {
    while (entry.beating) await new Promise((resolve) => setTimeout(resolve, 20))
    if (entry.state !== 'unreachable' && this.registry.get(entry.id) === entry)
      await this.discovery.beat(entry)
  }

  /** Removes the processor with hex key `id`, if known (it was refused). */
  dropById(id: string, why: string): void {
    const entry = this.registry.get(id)
    if (entry) this.discovery.drop(entry, why)
  }

  /** Removes a processor now (gone, or refused) and tells listeners. */
  drop(entry: ProcessorEntry, why: string): void {
    this.discovery.drop(entry, why)
  }
}
