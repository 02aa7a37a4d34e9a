import type { EventEmitter } from 'node:events'
import { MeshError } from '../../kernel/errors.js'
import type { Logger } from '../log.facility.js'
import type { NetFacility } from '../net/net.facility.js'
import type { PeerConnection } from '../net/peer-connection.js'
import type { Breakers } from './breaker.js'
import {
  applyBeat,
  applyStatus,
  idleBeatAfter,
  isBeat,
  newEntry,
  type ProcessorEntry,
  type ProcessorStatusReply,
} from './processor-entry.js'
import type { Registry, RegistryConfig } from './registry.js'

/** Lookups a request for an unknown model may trigger: one a second at most. */
const ON_DEMAND_LOOKUP_MS = 1_000
/** Why a processor may not be used, or null when it may (the gateway's admission rule). */
export type Admission = (publicKey: Buffer, status: ProcessorStatusReply) => string | null

/** First wait before re-dialling an unreachable processor; doubles up to `redialMaxMs`. */
const REDIAL_BASE_MS = 250
/** An unreachable processor is reported at info level once it has been so for this long, and then again each time as long. */
const UNREACHABLE_REPORT_MS = 5_000
/**
 * A DHT record whose peer does not answer is probed again after this, doubling up to the max.
 * The max is also how late a processor that comes back after it was dropped may be found: a
 * record it renews on its return looks the same as the stale one it left.
 */
const PROBE_BACKOFF_MS = 1_000
const PROBE_BACKOFF_MAX_MS = 8_000
/** Keys with failed probes remembered for their backoff (stale records of peers long gone). */
const MAX_PROBE_FAILURES = 1_024

/**
 * Finds processors and keeps the registry true: DHT lookups, a `status` probe before a
 * new processor is used, heartbeats, re-dials with backoff while one is unreachable, and
 * its drop after `goneAfterMs` (`drop` event, so work running there fails over). Emits
 * `added` (admitted, or reachable again), `unreachable`, `restarted` and `drop` with the entry; calls `onChange` whenever a slot
 * may have opened or a waiter may have become unservable.
 */
export class Discovery {
  private readonly net: NetFacility
  private readonly registry: Registry
  private readonly config: RegistryConfig
  private readonly log: Logger
  private readonly events: EventEmitter
  private readonly breakers: Breakers
  private readonly onChange: () => void
  /** The clock every deadline here reads (a simulation's own, in tests and benches). */
  private readonly now: () => number
  /** Why a processor may not be used (null: it may), asked before it is added and on each status. */
  private readonly refusal: Admission
  private readonly probing = new Set<string>()
  /** Keys `consider`ed while a probe of them ran (maybe refused before they were admitted). */
  private readonly reprobe = new Set<string>()
  /** Failed probes of keys found on the DHT, for their backoff. */
  private readonly probeFailures = new Map<string, { count: number; nextAt: number }>()
  private lookupTimer: NodeJS.Timeout | null = null
  private heartbeatTimer: NodeJS.Timeout | null = null
  private refreshing: Promise<void> | null = null
  private lastLookup = 0
  private lookupFailing = false
  private closing = false

  constructor(opts: {
    net: NetFacility
    registry: Registry
    config: RegistryConfig
    logger: Logger
    events: EventEmitter
    breakers: Breakers
    onChange: () => void
    clock?: () => number
    admission?: Admission
  }) {
    this.net = opts.net
    this.registry = opts.registry
    this.config = opts.config
    this.log = opts.logger
    this.events = opts.events
    this.breakers = opts.breakers
    this.onChange = opts.onChange
    this.now = opts.clock ?? Date.now
    this.refusal = opts.admission ?? (() => null)
  }

  /** Probes a processor now, whatever its backoff (e.g. it was just admitted), or once the probe under way ends. */
  consider(publicKey: Buffer): void {
    const id = publicKey.toString('hex')
    if (this.closing || this.registry.has(id)) return
    this.probeFailures.delete(id)
    if (this.probing.has(id)) this.reprobe.add(id)
    else void this.probe(publicKey)
  }

  start(): void {
    this.lookupTimer = setInterval(() => void this.refresh(), this.config.lookupIntervalMs)
    this.heartbeatTimer = setInterval(() => void this.tick(), this.config.heartbeatIntervalMs)
    void this.refresh()
  }

  /** Stops the timers and waits for a lookup under way; the registry is the caller's to clear. */
  async stop(): Promise<void> {
    this.closing = true
    if (this.lookupTimer) clearInterval(this.lookupTimer)
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer)
    this.lookupTimer = this.heartbeatTimer = null
    await this.refreshing?.catch(() => {})
  }

  /** One DHT lookup now (shared by concurrent callers); new processors are probed before use. */
  refresh(): Promise<void> {
    if (this.closing) return Promise.resolve()
    this.refreshing ??= this.lookupAndProbe().finally(() => {
      this.refreshing = null
      this.lastLookup = this.now()
    })
    return this.refreshing
  }

  /** A lookup now unless one ended less than ON_DEMAND_LOOKUP_MS ago. */
  refreshIfStale(): Promise<void> {
    if (this.now() - this.lastLookup < ON_DEMAND_LOOKUP_MS) return this.refreshing ?? Promise.resolve()
    return this.refresh()
  }

  private async lookupAndProbe(): Promise<void> {
    let keys: Buffer[]
    try {
      keys = await this.net.lookup('processor')
    } catch (err) {
      if (!this.lookupFailing)
        this.log.warn({ err }, 'processor lookup failed; retrying every lookup interval')
      this.lookupFailing = true
      return
    }
    if (this.lookupFailing) this.log.info('processor lookup works again')
    this.lookupFailing = false
    const now = this.now()
    const fresh: Buffer[] = []
    for (const k of keys) {
      const id = k.toString('hex')
      const entry = this.registry.get(id)
      // Found on the DHT while unreachable: it may have just announced itself after a restart.
      if (entry?.state === 'unreachable') void this.redial(entry)
      else if (!entry && (this.probeFailures.get(id)?.nextAt ?? 0) <= now) fresh.push(k)
    }
    // A new processor answers its probe in milliseconds; a stale or frozen record's dial can take
    // up to connectTimeoutMs. The lookup (which requests for an unknown model wait on) waits for
    // the quick ones only; the slow ones go on, one per key (`probing`).
    const probes = Promise.all(fresh.map((k) => this.probe(k)))
    let timer: NodeJS.Timeout | undefined
    await Promise.race([
      probes,
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, this.config.heartbeatTimeoutMs)
      }),
    ])
    clearTimeout(timer)
  }

  /** Dials a processor found on the DHT and adds it once it answers `status`. */
  private async probe(publicKey: Buffer): Promise<void> {
    const id = publicKey.toString('hex')
    if (this.probing.has(id)) return
    this.probing.add(id)
    try {
      const status = await this.dial(publicKey)
      if (this.closing || this.registry.has(id)) return
      this.probeFailures.delete(id)
      const entry = newEntry(publicKey)
      this.registry.add(entry)
      this.connection(entry)
      this.update(entry, status)
      this.log.info({ processor: id, models: [...entry.models], state: entry.state }, 'processor joined')
      if (this.isCurrent(entry)) this.events.emit('added', entry)
      this.onChange()
    } catch (err) {
      // A stale DHT record of a stopped processor, or one that refuses this gateway: try it
      // again later, backing off, rather than on every lookup.
      const failures = (this.probeFailures.get(id)?.count ?? 0) + 1
      if (this.probeFailures.size >= MAX_PROBE_FAILURES) this.probeFailures.clear()
      const wait = Math.min(PROBE_BACKOFF_MAX_MS, PROBE_BACKOFF_MS * 2 ** (failures - 1))
      this.probeFailures.set(id, { count: failures, nextAt: this.now() + wait })
      this.log.debug({ err, processor: id, failures, retryInMs: wait }, 'processor probe failed')
    } finally {
      this.probing.delete(id)
      if (this.reprobe.delete(id)) this.consider(publicKey)
    }
  }

  /**
   * A new connection to a processor and its `status` on it: the connection gets
   * `connectTimeoutMs` to open (a DHT lookup and a handshake), the answer `heartbeatTimeoutMs`.
   * It becomes the connection in use only once it answered; a dial that fails leaves nothing.
   * @throws ERR_TIMEOUT, ERR_UNAVAILABLE, or ERR_BAD_REQUEST when the peer is not a processor
   */
  private async dial(publicKey: Buffer): Promise<ProcessorStatusReply> {
    const conn = this.net.dial(publicKey)
    try {
      await conn.opened(this.config.connectTimeoutMs)
      const status = await conn.request<ProcessorStatusReply>('status', null, {
        timeout: this.config.heartbeatTimeoutMs,
      })
      if (status?.role !== 'processor') throw MeshError.badRequest('the peer is not a processor')
      const refused = this.refusal(publicKey, status)
      if (refused) throw new MeshError('ERR_FORBIDDEN', `processor not admitted: ${refused}`)
      if (this.closing) throw new MeshError('ERR_UNAVAILABLE', 'the gateway is stopping')
      this.net.adopt(conn)
      return status
    } catch (err) {
      conn.destroy()
      throw err
    }
  }

  /** The connection to a processor, watched: when it closes, the processor is unreachable. */
  private connection(entry: ProcessorEntry): PeerConnection {
    const conn = this.net.peer(entry.publicKey, entry.id)
    if (entry.watched !== conn) {
      entry.watched = conn
      conn.onClose(() => {
        if (this.isCurrent(entry) && entry.watched === conn && entry.state !== 'unreachable') {
          this.markUnreachable(entry, 'its connection closed')
        }
      })
    }
    return conn
  }

  private isCurrent(entry: ProcessorEntry): boolean {
    return !this.closing && this.registry.get(entry.id) === entry
  }

  private update(entry: ProcessorEntry, status: ProcessorStatusReply): void {
    const refused = this.refusal(entry.publicKey, status)
    if (refused) {
      this.drop(entry, `not admitted: ${refused}`)
      return
    }
    const instance = typeof status.instance === 'string' ? status.instance : ''
    if (entry.instance !== '' && instance !== '' && instance !== entry.instance) this.restarted(entry)
    entry.instance = instance
    if (status.draining === true) this.markDraining(entry)
    else if (entry.state === 'draining') entry.state = 'serving'
    this.registry.rememberModels(applyStatus(entry, status))
    // A slot may have opened: more capacity, or back from draining.
    this.onChange()
  }

  /** A processor that said it is stopping (in `status`, or by refusing work): sent nothing new. */
  markDraining(entry: ProcessorEntry): void {
    if (!this.isCurrent(entry) || entry.state !== 'serving') return
    entry.state = 'draining'
    this.log.info(
      { processor: entry.id, running: entry.inflight },
      'processor draining: sending it nothing new',
    )
  }

  /**
   * The same key answers from a new process: whatever ran on the old one is gone with it
   * (listeners fail it over), and the new one starts with a clean record.
   */
  private restarted(entry: ProcessorEntry): void {
    this.log.info({ processor: entry.id }, 'processor restarted')
    this.breakers.reset(entry)
    this.events.emit('restarted', entry)
  }

  /**
   * How often a processor that runs none of this gateway's requests is sent a heartbeat: every
   * `heartbeatIntervalMs`, or every so many of them that beats to all the processors known stay
   * within `beatBudgetPerSecond` (1,000 processors and a budget of 100: every 10 s).
   */
  idleBeatMs(): number {
    const { heartbeatIntervalMs: every, beatBudgetPerSecond: budget } = this.config
    return every * Math.max(1, Math.ceil((this.registry.size * 1000) / budget / every))
  }

  /**
   * One heartbeat round (every `heartbeatIntervalMs`): a `status` to every processor that runs
   * this gateway's requests or missed its last beat, and to the idle ones whose turn came (see
   * `idleBeatMs`); re-dials of the unreachable, and drops of those gone.
   */
  async tick(): Promise<void> {
    const now = this.now()
    const idleEvery = this.idleBeatMs()
    // Half a period of slack: a tick a little early still finds the beats due at it.
    const horizon = now + this.config.heartbeatIntervalMs / 2
    const work: Promise<void>[] = []
    for (const entry of this.registry.values()) {
      if (entry.state !== 'unreachable') {
        // Idle beats spaced out: each at the point of the period its key picks, not all at once.
        if (entry.nextBeatAt === 0 && idleEvery > this.config.heartbeatIntervalMs)
          entry.nextBeatAt = idleBeatAfter(entry, now, idleEvery)
        const busy = entry.inflight > 0 || entry.missed > 0
        if (entry.beating || (!busy && entry.nextBeatAt > horizon)) continue
        // After the horizon: a beat sent a little early must not find its own point still ahead.
        entry.nextBeatAt = idleBeatAfter(entry, horizon, idleEvery)
        work.push(this.beat(entry))
        continue
      }
      const down = now - entry.unreachableSince
      if (down >= this.config.goneAfterMs) this.drop(entry, `unreachable for ${Math.round(down / 1000)} s`)
      else if (!entry.dialing && now >= entry.nextDialAt) work.push(this.redial(entry))
    }
    await Promise.all(work)
  }

  async beat(entry: ProcessorEntry): Promise<void> {
    entry.beating = true
    try {
      const conn = this.connection(entry)
      await conn.opened(this.config.connectTimeoutMs)
      // The version held: a processor whose status has not changed since answers its load only.
      const since = entry.statusVersion
      const status =
        (await conn.request<ProcessorStatusReply | null>('status', since ? { since } : null, {
          timeout: this.config.heartbeatTimeoutMs,
        })) ?? {}
      if (!this.isCurrent(entry) || entry.state === 'unreachable') return
      if (!isBeat(status)) this.update(entry, status)
      else if (status.v === since) {
        applyBeat(entry, status, this.now())
        this.onChange()
      } else {
        // A beat for a version this gateway does not hold: the next beat asks for all of it.
        entry.statusVersion = ''
        entry.missed = 0
      }
    } catch (err) {
      if (!this.isCurrent(entry) || entry.state === 'unreachable') return
      entry.missed++
      this.log.debug({ err, processor: entry.id, missed: entry.missed }, 'heartbeat missed')
      if (entry.missed >= this.config.maxMissed) this.markUnreachable(entry, 'it stopped answering')
      else if (entry.missed === 1) void this.redial(entry)
    } finally {
      entry.beating = false
    }
  }

  /** Sends a processor nothing new and re-dials it at once, then with backoff. */
  private markUnreachable(entry: ProcessorEntry, why: string): void {
    const now = this.now()
    entry.state = 'unreachable'
    entry.unreachableSince = now
    entry.redials = 0
    entry.nextDialAt = now
    entry.reportedAt = now
    entry.missed = 0
    this.log.info({ processor: entry.id, why, running: entry.inflight }, 'processor unreachable: re-dialling')
    this.events.emit('unreachable', entry)
    void this.redial(entry)
  }

  /**
   * A fresh connection to a processor beside the one in use (whose running calls go on), made
   * the one in use when it answers. For an unreachable processor: back to serving, or the next
   * dial waits longer. After one missed beat: a processor that restarted is found at once
   * (its new process answers); a failed re-check leaves the verdict to the beats.
   */
  private async redial(entry: ProcessorEntry): Promise<void> {
    if (entry.dialing || !this.isCurrent(entry)) return
    entry.dialing = true
    try {
      const status = await this.dial(entry.publicKey)
      if (!this.isCurrent(entry)) return
      const wasUnreachable = entry.state === 'unreachable'
      const downMs = wasUnreachable ? this.now() - entry.unreachableSince : 0
      const sameProcess = entry.instance === '' || status.instance === entry.instance
      if (wasUnreachable) {
        entry.state = 'serving'
        entry.unreachableSince = 0
      }
      this.connection(entry)
      this.update(entry, status)
      if (!wasUnreachable || !this.isCurrent(entry)) return
      this.events.emit('added', entry)
      if (sameProcess) this.log.info({ processor: entry.id, downMs }, 'processor reachable again')
      else this.log.info({ processor: entry.id, downMs }, 'processor back after its restart')
    } catch (err) {
      if (this.isCurrent(entry) && entry.state === 'unreachable') this.redialFailed(entry, err)
    } finally {
      entry.dialing = false
    }
  }

  /** The next re-dial waits longer; the operator hears of it every UNREACHABLE_REPORT_MS. */
  private redialFailed(entry: ProcessorEntry, err: unknown): void {
    entry.redials++
    const cap = this.config.redialMaxMs
    const wait = Math.min(cap, REDIAL_BASE_MS * 2 ** (entry.redials - 1)) * (0.75 + Math.random() * 0.5)
    const now = this.now()
    entry.nextDialAt = now + wait
    const down = now - entry.unreachableSince
    const e = MeshError.from(err)
    if (now - entry.reportedAt < UNREACHABLE_REPORT_MS) {
      this.log.debug({ err: e, processor: entry.id, redials: entry.redials }, 're-dial failed')
      return
    }
    entry.reportedAt = now
    this.log.info(
      {
        processor: entry.id,
        downMs: down,
        redials: entry.redials,
        last: e.message,
        dropInMs: Math.max(0, this.config.goneAfterMs - down),
      },
      'processor still unreachable',
    )
  }

  /** Removes a processor now (gone, or refused) and tells listeners. */
  drop(entry: ProcessorEntry, why: string): void {
    if (!this.registry.delete(entry)) return
    this.net.forget(entry.publicKey)
    this.log.warn({ processor: entry.id, why }, 'processor dropped')
    this.events.emit('drop', entry)
    // Waiters for a model nobody serves any more would wait forever.
    this.onChange()
  }
}
