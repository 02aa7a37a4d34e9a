import { EventEmitter } from 'node:events'
import { type CancelToken, cancelError } from '../../kernel/cancel.js'
import type { GatewayConfig } from '../../kernel/config.js'
import { MeshError } from '../../kernel/errors.js'
import { baseModel } from '../../kernel/inference.js'
import { ewma } from '../../kernel/util.js'
import type { BreakerState, ProcessorState, ProcessorView } from '../../kernel/wire.js'
import { Facility } from '../facility.js'
import type { Logger } from '../log.facility.js'
import type { NetFacility } from '../net/net.facility.js'
import type { PeerConnection } from '../net/peer-connection.js'
import { type Candidate, choose, DEFAULT_EXPECTED_TOKENS, type StrategyState } from './strategies.js'

export type RegistryConfig = GatewayConfig['registry']
export type RoutingConfig = GatewayConfig['routing']

/** Lookups a request for an unknown model may trigger: one a second at most. */
const ON_DEMAND_LOOKUP_MS = 1_000
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

/** What a processor reports in `status` (the fields the router reads). */
interface ProcessorStatusReply {
  role?: string
  instance?: unknown
  draining?: unknown
  models?: unknown
  capacity?: unknown
  active?: unknown
  /** Of `active`, those not from this gateway. */
  activeOthers?: unknown
  queued?: unknown
  weight?: unknown
  backend?: { kind?: unknown; describe?: unknown }
  tokensPerSecond?: unknown
}

export interface ProcessorEntry {
  publicKey: Buffer
  id: string
  state: ProcessorState
  /** The processor process's own id: the same key with a new one is a restarted processor. */
  instance: string
  /** When it became unreachable (0 while it answers). */
  unreachableSince: number
  /** Re-dials since then, and when the next may start. */
  redials: number
  nextDialAt: number
  /** When it was last reported as unreachable at info level. */
  reportedAt: number
  /** The connection whose close makes it unreachable. */
  watched: PeerConnection | null
  beating: boolean
  dialing: boolean
  models: Set<string>
  capacity: number
  /** Generations the processor reports running (all gateways). */
  active: number
  /** Of those, the ones not from this gateway, as of its last report (routing's load). */
  activeElsewhere: number
  /** Requests waiting for a slot on the processor itself (all gateways). */
  queued: number
  /** Requests this gateway has running on it. */
  inflight: number
  weight: number
  backend: string
  /** Tokens/s the processor reports (its own EWMA). */
  reportedTokensPerSecond: number
  /** Measured here: EWMA of time to first token (ms) and of tokens/s while generating. */
  ttftMs: number | null
  tokensPerSecond: number | null
  served: number
  failures: number
  breaker: BreakerState
  /** Consecutive processor-side failures. */
  consecutiveFailures: number
  openedAt: number
  /** A half-open breaker lets one request through. */
  probing: boolean
  lastSeen: number
  missed: number
}

/** How a leased request ended, for the breaker and the speed measurements. */
export type LeaseOutcome =
  | { ok: true; ttftMs?: number; completionTokens?: number; evalMs?: number }
  | { ok: false; processorFault: boolean }

export interface Lease {
  entry: ProcessorEntry
  /** Frees the slot; call exactly once. */
  release(outcome: LeaseOutcome): void
}

interface Waiter {
  model: string
  userId: string
  exclude: ReadonlySet<string>
  resolve: (lease: Lease) => void
  reject: (err: unknown) => void
  unwatch: () => void
  enqueuedAt: number
}

/** One user's requests for one model: slots held and requests waiting. */
interface UserLoad {
  running: number
  waiting: number
}

/** Who uses one model's slots (users with a request running or waiting), for their fair shares. */
interface ModelLoad {
  users: Map<string, UserLoad>
  /** Of `users`, those with a request waiting. */
  waitingUsers: number
}

function asNumber(v: unknown, fallback: number): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : fallback
}

/** Whether `e` serves `model`, `:latest` or not (Ollama lists names with it, llama.cpp without). */
function serves(e: ProcessorEntry, model: string): boolean {
  if (e.models.has(model)) return true
  const base = baseModel(model)
  return e.models.has(base) || e.models.has(`${base}:latest`)
}

/**
 * The gateway's live view of processors and its scheduler.
 *
 * Registry: processors found by DHT lookup, probed with `status` before use,
 * kept by heartbeats, dropped after `maxMissed` silent beats (`drop` event, so
 * work running there fails over).
 *
 * Scheduling: a request `acquire()`s a slot on a processor that serves its
 * model, has a free slot (this gateway runs at most `capacity` requests on
 * it), and whose circuit breaker lets it through; the configured strategy
 * picks among those. When every such processor is full the request waits in a
 * bounded queue, one FIFO per user served in turn, so one busy user cannot
 * starve the others; past the bound it gets ERR_BUSY with a retry hint.
 * Running work is shared too: while other users wait for a model, a user who
 * holds their share of its slots (its processors' capacity ÷ the users running
 * or waiting for it, rounded up) gets another only after them. With nobody
 * else waiting a user may hold every slot (no slot idles for fairness' sake).
 *
 * Breakers: `breakerFailures` processor-side failures in a row open a
 * processor's breaker for `breakerCooldownMs`; then one probe request goes
 * through (half-open): success closes it, failure opens it again.
 */
export class RouterFacility extends Facility {
  readonly name = 'router'
  readonly events = new EventEmitter()
  private readonly net: NetFacility
  private readonly config: RegistryConfig
  private readonly routing: RoutingConfig
  private readonly log: Logger
  private readonly entries = new Map<string, ProcessorEntry>()
  private readonly knownModels = new Set<string>()
  private readonly probing = new Set<string>()
  private lookupTimer: NodeJS.Timeout | null = null
  private heartbeatTimer: NodeJS.Timeout | null = null
  private refreshing: Promise<void> | null = null
  private lastLookup = 0
  private lookupFailing = false
  /** Failed probes of keys found on the DHT, for their backoff. */
  private readonly probeFailures = new Map<string, { count: number; nextAt: number }>()
  private readonly strategyState: StrategyState = { turn: 0, cursor: new Map(), random: Math.random }
  /** Waiting requests, one FIFO per user; `userOrder` is whose turn comes next. */
  private readonly queues = new Map<string, Waiter[]>()
  private userOrder: string[] = []
  private waiting = 0
  /** Per model (`baseModel`), each user's slots held and requests waiting. Kept while idle: few. */
  private readonly loads = new Map<string, ModelLoad>()
  private expectedTokens = DEFAULT_EXPECTED_TOKENS
  /** EWMA of how long a lease is held, for the ERR_BUSY retry hint. */
  private serviceMs = 1000
  private readonly breakerTimers = new Set<NodeJS.Timeout>()

  constructor(opts: { net: NetFacility; config: RegistryConfig; routing: RoutingConfig; logger: Logger }) {
    super()
    const { net, config, routing, logger } = opts
    this.net = net
    this.config = config
    this.routing = routing
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
    for (const t of this.breakerTimers) clearTimeout(t)
    this.breakerTimers.clear()
    const closed = new MeshError('ERR_UNAVAILABLE', 'the gateway is stopping')
    for (const queue of this.queues.values()) for (const w of queue) this.settle(w, closed)
    this.queues.clear()
    this.userOrder = []
    this.waiting = 0
    this.loads.clear()
    await this.refreshing?.catch(() => {})
    this.entries.clear()
  }

  get size(): number {
    return this.entries.size
  }

  /** Requests waiting for a slot. */
  get queued(): number {
    return this.waiting
  }

  get strategy(): string {
    return this.routing.strategy
  }

  list(): ProcessorView[] {
    const now = Date.now()
    return [...this.entries.values()].map((e) => ({
      publicKey: e.id,
      state: e.state,
      models: [...e.models].sort(),
      capacity: e.capacity,
      active: e.active,
      queued: e.queued,
      inflight: e.inflight,
      weight: e.weight,
      backend: e.backend,
      tokensPerSecond: e.reportedTokensPerSecond,
      ttftMs: e.ttftMs === null ? null : Math.round(e.ttftMs * 100) / 100,
      measuredTokensPerSecond: e.tokensPerSecond === null ? null : Math.round(e.tokensPerSecond * 10) / 10,
      served: e.served,
      failures: e.failures,
      breaker: e.breaker,
      lastSeenMs: now - e.lastSeen,
    }))
  }

  entriesFor(model: string): ProcessorEntry[] {
    return [...this.entries.values()].filter((e) => serves(e, model))
  }

  /**
   * Refuses a model that no processor serves or ever served (after a fresh
   * lookup, at most one a second), before the request is admitted or recorded.
   * A model known at once is settled synchronously, with no promise: this is
   * on every request's path; a promise comes back only when a lookup is due.
   * @throws ERR_MODEL_NOT_FOUND (the promise rejects with it)
   */
  checkModel(model: string): Promise<void> | undefined {
    if (this.isKnownModel(model)) return undefined
    return this.refreshIfStale().then(() => {
      if (!this.isKnownModel(model)) throw MeshError.modelNotFound(model)
    })
  }

  private isKnownModel(model: string): boolean {
    return this.servesAny(model) || this.knownModels.has(baseModel(model))
  }

  /** Whether any known processor serves `model` (on every request's path: no array is built). */
  private servesAny(model: string): boolean {
    for (const e of this.entries.values()) if (serves(e, model)) return true
    return false
  }

  /** A lookup now unless one ended less than ON_DEMAND_LOOKUP_MS ago. */
  private refreshIfStale(): Promise<void> {
    if (Date.now() - this.lastLookup < ON_DEMAND_LOOKUP_MS) return this.refreshing ?? Promise.resolve()
    return this.refresh()
  }

  /** Processors that answer (serving or draining): those to ask for models and running models. */
  live(): ProcessorEntry[] {
    return [...this.entries.values()].filter((e) => e.state !== 'unreachable')
  }

  // ---------------------------------------------------------------- registry

  /** One DHT lookup now (shared by concurrent callers); new processors are probed before use. */
  refresh(): Promise<void> {
    if (this.closing) return Promise.resolve()
    this.refreshing ??= this.lookupAndProbe().finally(() => {
      this.refreshing = null
      this.lastLookup = Date.now()
    })
    return this.refreshing
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
    const now = Date.now()
    const fresh: Buffer[] = []
    for (const k of keys) {
      const id = k.toString('hex')
      const entry = this.entries.get(id)
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
      if (this.closing || this.entries.has(id)) return
      this.probeFailures.delete(id)
      const entry: ProcessorEntry = {
        publicKey,
        id,
        state: 'serving',
        instance: '',
        unreachableSince: 0,
        redials: 0,
        nextDialAt: 0,
        reportedAt: 0,
        watched: null,
        beating: false,
        dialing: false,
        models: new Set(),
        capacity: 1,
        active: 0,
        activeElsewhere: 0,
        queued: 0,
        inflight: 0,
        weight: 1,
        backend: '',
        reportedTokensPerSecond: 0,
        ttftMs: null,
        tokensPerSecond: null,
        served: 0,
        failures: 0,
        breaker: 'closed',
        consecutiveFailures: 0,
        openedAt: 0,
        probing: false,
        lastSeen: Date.now(),
        missed: 0,
      }
      this.entries.set(id, entry)
      this.connection(entry)
      this.update(entry, status)
      this.log.info({ processor: id, models: [...entry.models], state: entry.state }, 'processor joined')
      this.pump()
    } catch (err) {
      // A stale DHT record of a stopped processor, or one that refuses this gateway: try it
      // again later, backing off, rather than on every lookup.
      const failures = (this.probeFailures.get(id)?.count ?? 0) + 1
      if (this.probeFailures.size >= MAX_PROBE_FAILURES) this.probeFailures.clear()
      const wait = Math.min(PROBE_BACKOFF_MAX_MS, PROBE_BACKOFF_MS * 2 ** (failures - 1))
      this.probeFailures.set(id, { count: failures, nextAt: Date.now() + wait })
      this.log.debug({ err, processor: id, failures, retryInMs: wait }, 'processor probe failed')
    } finally {
      this.probing.delete(id)
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
    return !this.closing && this.entries.get(entry.id) === entry
  }

  private update(entry: ProcessorEntry, status: ProcessorStatusReply): void {
    const instance = typeof status.instance === 'string' ? status.instance : ''
    if (entry.instance !== '' && instance !== '' && instance !== entry.instance) this.restarted(entry)
    entry.instance = instance
    const draining = status.draining === true
    if (draining && entry.state === 'serving') {
      entry.state = 'draining'
      this.log.info(
        { processor: entry.id, running: entry.inflight },
        'processor draining: sending it nothing new',
      )
    } else if (!draining && entry.state === 'draining') {
      entry.state = 'serving'
    }
    const models = Array.isArray(status.models)
      ? status.models.filter((m): m is string => typeof m === 'string')
      : []
    entry.models = new Set(models)
    for (const m of models) this.knownModels.add(baseModel(m))
    entry.capacity = Math.max(1, Math.floor(asNumber(status.capacity, 1)))
    entry.active = Math.max(0, asNumber(status.active, 0))
    // Taken as the processor counts it: our own count, subtracted here, would be one too many
    // for each of our requests that ended while the report travelled.
    entry.activeElsewhere = Math.max(0, Math.min(entry.active, asNumber(status.activeOthers, 0)))
    entry.queued = Math.max(0, asNumber(status.queued, 0))
    entry.weight = Math.max(0, asNumber(status.weight, 1))
    entry.reportedTokensPerSecond = asNumber(status.tokensPerSecond, 0)
    entry.backend = typeof status.backend?.kind === 'string' ? status.backend.kind : ''
    entry.lastSeen = Date.now()
    entry.missed = 0
    // A slot may have opened: more capacity, or back from draining.
    this.pump()
  }

  /**
   * The same key answers from a new process: whatever ran on the old one is gone with it
   * (listeners fail it over), and the new one starts with a clean record.
   */
  private restarted(entry: ProcessorEntry): void {
    this.log.info({ processor: entry.id }, 'processor restarted')
    entry.breaker = 'closed'
    entry.consecutiveFailures = 0
    entry.probing = false
    this.events.emit('restarted', entry)
  }

  /** One beat for every processor: a status over its connection, or a re-dial when unreachable. */
  private async heartbeat(): Promise<void> {
    const now = Date.now()
    await Promise.all(
      [...this.entries.values()].map(async (entry) => {
        if (entry.state !== 'unreachable') {
          if (!entry.beating) await this.beat(entry)
          return
        }
        const down = now - entry.unreachableSince
        if (down >= this.config.goneAfterMs) {
          this.drop(entry, `unreachable for ${Math.round(down / 1000)} s`)
          return
        }
        if (!entry.dialing && now >= entry.nextDialAt) await this.redial(entry)
      }),
    )
  }

  private async beat(entry: ProcessorEntry): Promise<void> {
    entry.beating = true
    try {
      const conn = this.connection(entry)
      await conn.opened(this.config.connectTimeoutMs)
      const status = await conn.request<ProcessorStatusReply>('status', null, {
        timeout: this.config.heartbeatTimeoutMs,
      })
      if (this.isCurrent(entry) && entry.state !== 'unreachable') this.update(entry, status ?? {})
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
    const now = Date.now()
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
      const downMs = wasUnreachable ? Date.now() - entry.unreachableSince : 0
      const sameProcess = entry.instance === '' || status.instance === entry.instance
      if (wasUnreachable) {
        entry.state = 'serving'
        entry.unreachableSince = 0
      }
      this.connection(entry)
      this.update(entry, status)
      if (!wasUnreachable) return
      if (sameProcess) this.log.info({ processor: entry.id, downMs }, 'processor reachable again')
      else this.log.info({ processor: entry.id, downMs }, 'processor back after its restart')
    } catch (err) {
      if (!this.isCurrent(entry) || entry.state !== 'unreachable') return
      entry.redials++
      const cap = this.config.redialMaxMs
      const wait = Math.min(cap, REDIAL_BASE_MS * 2 ** (entry.redials - 1)) * (0.75 + Math.random() * 0.5)
      const now = Date.now()
      entry.nextDialAt = now + wait
      const down = now - entry.unreachableSince
      const e = MeshError.from(err)
      if (now - entry.reportedAt >= UNREACHABLE_REPORT_MS) {
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
      } else {
        this.log.debug({ err: e, processor: entry.id, redials: entry.redials }, 're-dial failed')
      }
    } finally {
      entry.dialing = false
    }
  }

  /** Removes a processor now (gone, or refused) and tells listeners. */
  drop(entry: ProcessorEntry, why: string): void {
    if (this.entries.get(entry.id) !== entry) return
    this.entries.delete(entry.id)
    this.net.forget(entry.publicKey)
    this.log.warn({ processor: entry.id, why }, 'processor dropped')
    this.events.emit('drop', entry)
    // Waiters for a model nobody serves any more would wait forever.
    this.pump()
  }

  /** Whether a processor other than `except` could take a request for `model` now or soon. */
  hasOtherFor(model: string, except: string): boolean {
    for (const e of this.entries.values()) {
      if (e.id !== except && e.state === 'serving' && serves(e, model)) return true
    }
    return false
  }

  /** A processor that refused work because it is stopping: sent nothing new from now on. */
  markDraining(entry: ProcessorEntry): void {
    if (!this.isCurrent(entry) || entry.state !== 'serving') return
    entry.state = 'draining'
    this.log.info(
      { processor: entry.id, running: entry.inflight },
      'processor draining: sending it nothing new',
    )
  }

  // ---------------------------------------------------------------- breakers

  /** Whether the breaker lets a request through to `e` now (a half-open one: just one). */
  private admits(e: ProcessorEntry, now: number): boolean {
    if (e.breaker === 'closed') return true
    if (e.breaker === 'open' && now - e.openedAt >= this.routing.breakerCooldownMs) {
      e.breaker = 'half-open'
      e.probing = false
      this.log.info({ processor: e.id }, 'breaker half-open: one probe request')
    }
    return e.breaker === 'half-open' && !e.probing
  }

  private recordOutcome(e: ProcessorEntry, outcome: LeaseOutcome): void {
    if (outcome.ok) {
      e.served++
      e.consecutiveFailures = 0
      if (e.breaker !== 'closed') this.log.info({ processor: e.id }, 'breaker closed: the probe succeeded')
      e.breaker = 'closed'
      e.probing = false
      if (outcome.ttftMs !== undefined && outcome.ttftMs >= 0) e.ttftMs = ewma(e.ttftMs, outcome.ttftMs)
      if (outcome.completionTokens && outcome.evalMs && outcome.evalMs > 0) {
        e.tokensPerSecond = ewma(e.tokensPerSecond, (outcome.completionTokens * 1000) / outcome.evalMs)
      }
      if (outcome.completionTokens !== undefined) {
        this.expectedTokens = ewma(this.expectedTokens, Math.max(1, outcome.completionTokens)) as number
      }
      return
    }
    if (!outcome.processorFault) {
      // Not the processor's doing (cancelled, bad request): a probe slot is free again.
      e.probing = false
      return
    }
    e.failures++
    e.consecutiveFailures++
    if (e.breaker === 'half-open' || e.consecutiveFailures >= this.routing.breakerFailures) {
      if (e.breaker !== 'open')
        this.log.warn({ processor: e.id, failures: e.consecutiveFailures }, 'breaker open')
      e.breaker = 'open'
      e.openedAt = Date.now()
      e.probing = false
      const timer = setTimeout(() => {
        this.breakerTimers.delete(timer)
        this.pump()
      }, this.routing.breakerCooldownMs)
      timer.unref()
      this.breakerTimers.add(timer)
    }
  }

  // ---------------------------------------------------------------- scheduling

  /**
   * A slot free right now on a processor for `model` (none of `exclude`) for
   * `userId`, or null: what `acquire` starts with, without its promise, for the
   * common case on every request's path. Null says nothing about why (no free
   * slot, or the user holds their share while others wait): call `acquire`.
   */
  leaseNow(model: string, exclude: ReadonlySet<string>, userId = ''): Lease | null {
    if (this.waiting > 0 && this.overShare(userId, model)) return null
    return this.tryLease(model, exclude, Date.now(), userId)
  }

  /**
   * A slot on a processor for `model`, now or once one frees (queued, fairly
   * across users; a user holding their share of the model's slots while others
   * wait for it queues behind them). Resolve with the lease; `release()` it when done.
   * @throws ERR_MODEL_NOT_FOUND (no processor ever served it), ERR_NO_PROCESSOR (none left, or
   *         every one's breaker is open), ERR_BUSY (queue full), or `cancel`'s reason
   */
  async acquire(
    model: string,
    opts: { userId?: string; exclude?: ReadonlySet<string>; cancel?: CancelToken } = {},
  ): Promise<Lease> {
    const { userId = '', exclude = new Set<string>(), cancel } = opts
    if (cancel?.aborted) throw cancelError(cancel.reason)
    let now = Date.now()
    // Over their share while others wait: behind them, even if a slot is free (the pump decides).
    const deferred = this.waiting > 0 && this.overShare(userId, model)
    let lease = deferred ? null : this.tryLease(model, exclude, now, userId)
    if (lease) return lease
    if (exclude.size === 0 && !this.servesAny(model)) {
      // A processor may have joined since the last periodic lookup.
      await this.refreshIfStale()
      now = Date.now()
      lease = this.tryLease(model, exclude, now, userId)
      if (lease) return lease
    }
    this.checkServable(model, exclude, now)

    const userQueue = this.queues.get(userId)
    if (this.waiting >= this.routing.maxQueue || (userQueue?.length ?? 0) >= this.routing.maxQueuePerUser) {
      const retryAfterMs = Math.max(
        1000,
        Math.round(((this.waiting + 1) * this.serviceMs) / Math.max(1, this.capacityFor(model))),
      )
      throw new MeshError(
        'ERR_BUSY',
        `every processor for '${model}' is busy and the queue is full; retry in ${Math.ceil(retryAfterMs / 1000)} s`,
        { model, queued: this.waiting, retryAfterMs },
      )
    }
    return new Promise<Lease>((resolve, reject) => {
      const waiter: Waiter = {
        model,
        userId,
        exclude,
        resolve,
        reject,
        unwatch: () => {},
        enqueuedAt: now,
      }
      if (cancel) {
        waiter.unwatch = cancel.onAbort((reason) => {
          if (this.remove(waiter)) this.settle(waiter, cancelError(reason))
        })
      }
      if (userQueue) userQueue.push(waiter)
      else {
        this.queues.set(userId, [waiter])
        this.userOrder.push(userId)
      }
      this.waiting++
      this.count(model, userId, 0, 1)
      // A free slot none of the others can take (another model's, an excluded processor's) is
      // still this request's: work-conserving.
      if (deferred) this.pump()
    })
  }

  private capacityFor(model: string): number {
    return this.entriesFor(model).reduce((n, e) => n + e.capacity, 0)
  }

  /** Adds to `userId`'s count of slots held and requests waiting for `model` (negative: takes off). */
  private count(model: string, userId: string, running: number, waiting: number): void {
    const key = baseModel(model)
    let load = this.loads.get(key)
    if (!load) {
      load = { users: new Map(), waitingUsers: 0 }
      this.loads.set(key, load)
    }
    let mine = load.users.get(userId)
    if (!mine) {
      mine = { running: 0, waiting: 0 }
      load.users.set(userId, mine)
    }
    const wasWaiting = mine.waiting > 0
    mine.running += running
    mine.waiting += waiting
    if (wasWaiting !== mine.waiting > 0) load.waitingUsers += wasWaiting ? -1 : 1
    if (mine.running === 0 && mine.waiting === 0) load.users.delete(userId)
  }

  /**
   * Whether `userId` holds at least their share of `model`'s slots while another user waits
   * for it: the slots of the processors serving it ÷ the users running or waiting for it,
   * rounded up. Never while nobody else waits: a user alone may hold every slot.
   */
  private overShare(userId: string, model: string): boolean {
    const load = this.loads.get(baseModel(model))
    const mine = load?.users.get(userId)
    if (!load || !mine || mine.running === 0) return false
    if (load.waitingUsers - (mine.waiting > 0 ? 1 : 0) === 0) return false
    let slots = 0
    for (const e of this.entries.values()) if (e.state === 'serving' && serves(e, model)) slots += e.capacity
    return mine.running >= Math.ceil(slots / load.users.size)
  }

  /** Throws when no processor could ever take the request (as opposed to: all are busy). */
  private checkServable(model: string, exclude: ReadonlySet<string>, now: number): void {
    const serving = this.entriesFor(model)
    if (serving.length === 0) {
      if (this.knownModels.has(baseModel(model)) || exclude.size > 0) throw MeshError.noProcessor(model)
      throw MeshError.modelNotFound(model)
    }
    const usable = serving.filter((e) => !exclude.has(e.id))
    if (usable.length === 0) throw MeshError.noProcessor(model, 'every one failed for this request')
    // Draining and unreachable processors may come back (a restart): wait for them, unless all
    // that can take requests now refuse them with an open breaker.
    if (
      usable.every(
        (e) =>
          e.state === 'serving' && e.breaker === 'open' && now - e.openedAt < this.routing.breakerCooldownMs,
      )
    ) {
      const retryAfterMs = Math.min(...usable.map((e) => this.routing.breakerCooldownMs - (now - e.openedAt)))
      throw MeshError.noProcessor(
        model,
        `every one is failing; circuit open for ${Math.ceil(retryAfterMs / 1000)} s`,
      )
    }
  }

  /** A lease for `userId` on the processor the strategy picks among those free now, or null. */
  private tryLease(model: string, exclude: ReadonlySet<string>, now: number, userId: string): Lease | null {
    const free: ProcessorEntry[] = []
    for (const e of this.entries.values()) {
      if (e.state !== 'serving' || !serves(e, model) || exclude.has(e.id) || e.inflight >= e.capacity)
        continue
      if (this.admits(e, now)) free.push(e)
    }
    if (free.length === 0) return null
    const picked = choose(
      this.routing.strategy,
      model,
      free as Candidate[],
      this.strategyState,
      this.expectedTokens,
    ) as ProcessorEntry
    return this.lease(picked, model, userId)
  }

  private lease(entry: ProcessorEntry, model: string, userId: string): Lease {
    entry.inflight++
    this.count(model, userId, 1, 0)
    if (entry.breaker === 'half-open') entry.probing = true
    const started = Date.now()
    let released = false
    return {
      entry,
      release: (outcome) => {
        if (released) return
        released = true
        entry.inflight--
        this.count(model, userId, -1, 0)
        this.serviceMs = ewma(this.serviceMs, Date.now() - started) as number
        this.recordOutcome(entry, outcome)
        this.pump()
      },
    }
  }

  /**
   * Hands free slots to waiting requests, users in turn; fails waiters nobody can serve. Users
   * below their share of a model others wait for go first; then, so that no slot idles while
   * a waiter could use it, anyone.
   */
  private pump(): void {
    if (this.waiting === 0) return
    const now = Date.now()
    let progress = true
    while (progress && this.waiting > 0) progress = this.pumpOnce(now, true) || this.pumpOnce(now, false)
  }

  /** One turn of every waiting user (with `fair`: those below their share only); whether any moved. */
  private pumpOnce(now: number, fair: boolean): boolean {
    let progress = false
    for (let i = 0; i < this.userOrder.length && this.waiting > 0; i++) {
      const userId = this.userOrder[i] as string
      const head = this.queues.get(userId)?.[0]
      if (!head || (fair && this.overShare(userId, head.model))) continue
      let lease: Lease | null
      try {
        lease = this.tryLease(head.model, head.exclude, now, userId)
        if (!lease) this.checkServable(head.model, head.exclude, now)
      } catch (err) {
        this.remove(head)
        this.settle(head, err)
        progress = true
        continue
      }
      if (!lease) continue
      this.remove(head)
      head.unwatch()
      head.resolve(lease)
      progress = true
      // This user just had a turn: to the back of the line (if they still wait). Either way
      // the next user now stands at position i.
      const at = this.userOrder.indexOf(userId)
      if (at !== -1) {
        this.userOrder.splice(at, 1)
        this.userOrder.push(userId)
      }
      i--
    }
    return progress
  }

  private remove(w: Waiter): boolean {
    const queue = this.queues.get(w.userId)
    const at = queue ? queue.indexOf(w) : -1
    if (!queue || at === -1) return false
    queue.splice(at, 1)
    this.waiting--
    this.count(w.model, w.userId, 0, -1)
    if (queue.length === 0) {
      this.queues.delete(w.userId)
      this.userOrder = this.userOrder.filter((u) => u !== w.userId)
    }
    return true
  }

  private settle(w: Waiter, err: unknown): void {
    w.unwatch()
    w.reject(err)
  }
}
