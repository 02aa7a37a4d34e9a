import { EventEmitter } from 'node:events'
import type { GatewayConfig } from '../workers/lib/config.js'
import { MeshError } from '../workers/lib/errors.js'
import { Facility } from './facility.js'
import type { Logger } from './log.facility.js'
import type { NetFacility } from './net.facility.js'

export type RegistryConfig = GatewayConfig['registry']

/** What a processor reports in `status` (the fields the router reads). */
interface ProcessorStatusReply {
  role?: string
  models?: unknown
  capacity?: unknown
  active?: unknown
  backend?: { kind?: unknown; describe?: unknown }
  tokensPerSecond?: unknown
}

export interface ProcessorEntry {
  publicKey: Buffer
  id: string
  models: Set<string>
  capacity: number
  /** Generations the processor reports running (all gateways). */
  active: number
  /** Requests this gateway has in flight on it. */
  inflight: number
  backend: string
  tokensPerSecond: number
  lastSeen: number
  missed: number
}

export interface ProcessorView {
  publicKey: string
  models: string[]
  capacity: number
  active: number
  inflight: number
  backend: string
  tokensPerSecond: number
  lastSeenMs: number
}

function asNumber(v: unknown, fallback: number): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : fallback
}

/**
 * The gateway's live view of processors: found by DHT lookup, kept by
 * heartbeats (`status`), dropped after `maxMissed` silent beats. Emits
 * `drop` (ProcessorEntry) so callers can fail over work on a lost processor.
 */
export class RouterFacility extends Facility {
  readonly name = 'router'
  readonly events = new EventEmitter()
  private readonly net: NetFacility
  private readonly config: RegistryConfig
  private readonly log: Logger
  private readonly entries = new Map<string, ProcessorEntry>()
  private readonly knownModels = new Set<string>()
  private readonly probing = new Set<string>()
  private lookupTimer: NodeJS.Timeout | null = null
  private heartbeatTimer: NodeJS.Timeout | null = null
  private refreshing: Promise<void> | null = null
  private rotation = 0

  constructor(opts: { net: NetFacility; config: RegistryConfig; logger: Logger }) {
    super()
    const { net, config, logger } = opts
    this.net = net
    this.config = config
    this.log = logger
  }

  protected override async _open(): Promise<void> {
    this.lookupTimer = setInterval(() => void this.refresh(), this.config.lookupIntervalMs)
    this.heartbeatTimer = setInterval(() => void this.heartbeat(), this.config.heartbeatIntervalMs)
    void this.refresh()
  }

  protected override async _close(): Promise<void> {
    if (this.lookupTimer) clearInterval(this.lookupTimer)
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer)
    this.lookupTimer = this.heartbeatTimer = null
    await this.refreshing?.catch(() => {})
    this.entries.clear()
  }

  get size(): number {
    return this.entries.size
  }

  list(): ProcessorView[] {
    const now = Date.now()
    return [...this.entries.values()].map((e) => ({
      publicKey: e.id,
      models: [...e.models].sort(),
      capacity: e.capacity,
      active: e.active,
      inflight: e.inflight,
      backend: e.backend,
      tokensPerSecond: e.tokensPerSecond,
      lastSeenMs: now - e.lastSeen,
    }))
  }

  entriesFor(model: string): ProcessorEntry[] {
    return [...this.entries.values()].filter((e) => e.models.has(model))
  }

  live(): ProcessorEntry[] {
    return [...this.entries.values()]
  }

  /** One DHT lookup now (shared by concurrent callers); new processors are probed before use. */
  refresh(): Promise<void> {
    if (this.closing) return Promise.resolve()
    this.refreshing ??= this.lookupAndProbe().finally(() => {
      this.refreshing = null
    })
    return this.refreshing
  }

  private async lookupAndProbe(): Promise<void> {
    let keys: Buffer[]
    try {
      keys = await this.net.lookup('processor')
    } catch (err) {
      this.log.warn({ err }, 'processor lookup failed')
      return
    }
    await Promise.all(keys.filter((k) => !this.entries.has(k.toString('hex'))).map((k) => this.probe(k)))
  }

  private async probe(publicKey: Buffer): Promise<void> {
    const id = publicKey.toString('hex')
    if (this.probing.has(id)) return
    this.probing.add(id)
    try {
      const status = await this.net
        .peer(publicKey)
        .request<ProcessorStatusReply>('status', null, { timeout: this.config.heartbeatTimeoutMs })
      if (status?.role !== 'processor' || this.closing) return
      const entry: ProcessorEntry = {
        publicKey,
        id,
        models: new Set(),
        capacity: 1,
        active: 0,
        inflight: 0,
        backend: '',
        tokensPerSecond: 0,
        lastSeen: Date.now(),
        missed: 0,
      }
      this.update(entry, status)
      this.entries.set(id, entry)
      this.log.info({ processor: id, models: [...entry.models] }, 'processor joined')
    } catch (err) {
      // A stale DHT record of a stopped processor: forget the half-open connection.
      this.log.debug({ err, processor: id }, 'processor probe failed')
      this.net.forget(publicKey)
    } finally {
      this.probing.delete(id)
    }
  }

  private update(entry: ProcessorEntry, status: ProcessorStatusReply): void {
    const models = Array.isArray(status.models)
      ? status.models.filter((m): m is string => typeof m === 'string')
      : []
    entry.models = new Set(models)
    for (const m of models) this.knownModels.add(m)
    entry.capacity = Math.max(1, asNumber(status.capacity, 1))
    entry.active = Math.max(0, asNumber(status.active, 0))
    entry.tokensPerSecond = asNumber(status.tokensPerSecond, 0)
    entry.backend = typeof status.backend?.kind === 'string' ? status.backend.kind : ''
    entry.lastSeen = Date.now()
    entry.missed = 0
  }

  private async heartbeat(): Promise<void> {
    await Promise.all(
      [...this.entries.values()].map(async (entry) => {
        try {
          const status = await this.net
            .peer(entry.publicKey)
            .request<ProcessorStatusReply>('status', null, { timeout: this.config.heartbeatTimeoutMs })
          if (this.entries.get(entry.id) === entry) this.update(entry, status ?? {})
        } catch (err) {
          entry.missed++
          this.log.debug({ err, processor: entry.id, missed: entry.missed }, 'heartbeat missed')
          if (entry.missed >= this.config.maxMissed) this.drop(entry, 'stopped answering')
        }
      }),
    )
  }

  /** Removes a processor now (it failed or stopped answering) and tells listeners. */
  drop(entry: ProcessorEntry, why: string): void {
    if (this.entries.get(entry.id) !== entry) return
    this.entries.delete(entry.id)
    this.net.forget(entry.publicKey)
    this.log.warn({ processor: entry.id, why }, 'processor dropped')
    this.events.emit('drop', entry)
  }

  /**
   * The processor to use for `model`, least loaded first (ties rotate).
   * @throws ERR_NO_PROCESSOR when the model is known but nobody live serves it,
   *         ERR_MODEL_NOT_FOUND when no processor ever served it
   */
  async pick(model: string, exclude: ReadonlySet<string> = new Set()): Promise<ProcessorEntry> {
    let candidates = this.entriesFor(model).filter((e) => !exclude.has(e.id))
    if (candidates.length === 0 && exclude.size === 0) {
      // A processor may have joined since the last periodic lookup.
      await this.refresh()
      candidates = this.entriesFor(model)
    }
    if (candidates.length === 0) {
      if (this.knownModels.has(model) || exclude.size > 0) throw MeshError.noProcessor(model)
      throw MeshError.modelNotFound(model)
    }
    const load = (e: ProcessorEntry) => Math.max(e.inflight, e.active) / e.capacity
    const best = Math.min(...candidates.map(load))
    const tied = candidates.filter((e) => load(e) === best)
    return tied[this.rotation++ % tied.length] as ProcessorEntry
  }
}
