/**
 * A gateway's router at scale, simulated: the real registry, discovery (heartbeats, re-dials,
 * drops) and scheduler (leases, the fair queue, breakers) over N stand-in processors on a
 * stand-in network — no DHT, no sockets — in simulated time, so 10 s of a 1,000-processor mesh
 * take about a second. Requests arrive at random (seeded) and hold their slot for a random
 * time; other gateways' load on the processors moves; now and then a processor's models
 * change; a few processors go away mid-run (half of them cut off silently, half stopped, which
 * closes their connection) and come back (the stopped ones restarted).
 *
 * Measured: the cost of each pick (`lease()` up to the slot chosen, process.hrtime on the real
 * scheduler code: wall time, not simulated), of each release (`answered()`, which hands the slot
 * to a waiter), and every `status` message between the gateway and the processors with its
 * JSON payload as encoded on the wire (facilities/net/payload.ts); per message the RPC framing
 * and encryption add a constant the bench measures on a real connection.
 *
 * Used by scale-sim.test.ts (small) and bench/routing-scale.ts (full).
 */
import { EventEmitter } from 'node:events'
import { LogFacility } from '../../../facilities/log.facility.js'
import type { NetFacility } from '../../../facilities/net/net.facility.js'
import { encodeJSON } from '../../../facilities/net/payload.js'
import { Breakers } from '../../../facilities/router/breaker.js'
import { Discovery } from '../../../facilities/router/discovery.js'
import type { ProcessorEntry } from '../../../facilities/router/processor-entry.js'
import { detectionBoundMs, Registry, type RegistryConfig } from '../../../facilities/router/registry.js'
import { type Lease, Scheduler } from '../../../facilities/router/scheduler.js'
import { gatewayConfigSchema, parseConfig } from '../../../kernel/config.js'
import { MeshError } from '../../../kernel/errors.js'
import { StatusVersions } from '../../../kernel/status-beat.js'
import { seededRandom } from '../../../kernel/util.js'

export interface SimOptions {
  processors: number
  /** Simulated seconds. */
  seconds: number
  /** Processors that predate versioned status, and a gateway without a beat budget: the design before. */
  legacy?: boolean
  /** Share of all slots busy on average (0.5). */
  utilization?: number
  /** Registry settings over the defaults (1 s heartbeats, 1.5 s timeout, 2 missed, 100 beats/s). */
  registry?: Partial<RegistryConfig>
  seed?: number
}

export interface Spread {
  p50: number
  p99: number
  max: number
}

export interface SimResult {
  processors: number
  seconds: number
  legacy: boolean
  leases: number
  /** Leases that waited in the queue for a slot. */
  waited: number
  failedOver: number
  /** µs of wall time per pick (`lease()` with a free slot) and per release (`answered()`). */
  pickUs: Spread
  releaseUs: Spread
  /** `status` requests and replies per simulated second (the joining probes left out), mean and busiest second. */
  messagesPerSecond: number
  peakMessagesPerSecond: number
  /** JSON payload bytes of those per second. */
  payloadBytesPerSecond: number
  /** Bytes of one full status reply and of one beat reply, as encoded. */
  fullReplyBytes: number
  beatReplyBytes: number
  /** Per silently cut processor that ran this gateway's work: ms from the cut to its `unreachable`. */
  detectionMs: number[]
  /** The bound on those, from the settings: see `detectionBoundMs`. */
  detectionBoundMs: number
  /** Processors running this gateway's requests, mean over the heartbeat rounds. */
  busyProcessors: number
  /** Processors serving at the end, of `processors`. */
  servingAtEnd: number
}

const MODELS = [
  'llama3.2:3b',
  'qwen2.5:7b',
  'mistral:7b',
  'gemma2:9b',
  'phi3:mini',
  'nomic-embed-text:latest',
]
const CAPACITY = 2
const SERVICE_MS = 2_000
/** How long a dial to a processor that is away takes to fail. */
const DIAL_FAIL_MS = 1_000
const STEP_MS = 10

/** Simulated time: timers run in order as it advances, each followed by the microtasks it set off. */
class SimTime {
  now = 0
  private timers: { at: number; fn: () => void }[] = []

  after(ms: number, fn: () => void): void {
    const at = this.now + ms
    let lo = 0
    let hi = this.timers.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if ((this.timers[mid] as { at: number }).at <= at) lo = mid + 1
      else hi = mid
    }
    this.timers.splice(lo, 0, { at, fn })
  }

  /** Runs every timer due by `t`, in order. */
  async advanceTo(t: number): Promise<void> {
    while (this.timers.length > 0 && (this.timers[0] as { at: number }).at <= t) {
      const timer = this.timers.shift() as { at: number; fn: () => void }
      this.now = timer.at
      timer.fn()
    }
    this.now = t
    await settle()
  }
}

/** Lets every promise chain set off so far run to its end (the stand-ins answer in microtasks). */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve))

interface Conn {
  closeFns: Array<() => void>
}

/** One stand-in processor: its status as a real one builds it, answered as a real one answers. */
class SimProcessor {
  readonly key: Buffer
  readonly id: string
  instance: string
  versions: StatusVersions | null
  models: string[]
  /** This gateway's requests running here, and other gateways'. */
  mine = 0
  others = 0
  /** Its link works; `stopped`: its process is stopped. */
  up = true
  conn: Conn = { closeFns: [] }
  private restarts = 0

  constructor(
    n: number,
    models: string[],
    private readonly legacy: boolean,
  ) {
    this.key = Buffer.alloc(32)
    this.key.writeUInt32BE(Math.floor(((n * 2654435761) >>> 0) % 2 ** 32), 0)
    this.key.writeUInt32BE(n, 28)
    this.id = this.key.toString('hex')
    this.instance = this.nextInstance()
    this.versions = legacy ? null : new StatusVersions(this.instance)
    this.models = models
  }

  private nextInstance(): string {
    return `${this.id.slice(0, 8)}${String(this.restarts++).padStart(8, '0')}`
  }

  /** Every field a real processor's `status` has (BaseStatus and ProcessorStatus), realistic values. */
  full(): Record<string, unknown> {
    const active = this.mine + this.others
    return {
      role: 'processor',
      version: '0.1.0',
      mesh: 'default',
      publicKey: this.id,
      instance: this.instance,
      uptimeMs: 86_400_000 + Math.floor(Math.random() * 1000),
      inflight: active,
      draining: false,
      dhtAddress: '198.51.100.23:49737',
      backend: {
        kind: 'ollama',
        describe: 'ollama: http://127.0.0.1:11434 (Ollama 0.6.5)',
        reason: 'configured',
      },
      models: this.models,
      capacity: CAPACITY,
      active,
      activeOthers: this.others,
      queued: Math.max(0, active - CAPACITY),
      weight: 1,
      served: 12_345,
      failed: 3,
      tokensPerSecond: 41.7,
    }
  }

  status(payload: unknown): Record<string, unknown> {
    const full = this.full()
    return this.versions ? this.versions.reply(full, payload) : full
  }

  /** Stopped: its connections close. */
  stop(): void {
    this.up = false
    const fns = this.conn.closeFns
    this.conn = { closeFns: [] }
    for (const fn of fns) fn()
  }

  /** Started again: a new process. */
  restart(): void {
    this.instance = this.nextInstance()
    this.versions = this.legacy ? null : new StatusVersions(this.instance)
    this.others = 0
    this.up = true
  }
}

/** Counts of the `status` traffic, per simulated second. */
class Traffic {
  messages = 0
  bytes = 0
  counting = false
  readonly perSecond = new Map<number, number>()

  count(time: SimTime, value: unknown): number {
    const bytes = encodeJSON(value).byteLength
    if (!this.counting) return bytes
    this.messages++
    this.bytes += bytes
    const s = Math.floor(time.now / 1000)
    this.perSecond.set(s, (this.perSecond.get(s) ?? 0) + 1)
    return bytes
  }
}

/** The stand-in network: lookups find every processor; connections answer `status` (or time out while cut off). */
function simNet(pool: Map<string, SimProcessor>, time: SimTime, traffic: Traffic): NetFacility {
  const conn = (key: Buffer) => {
    const p = pool.get(key.toString('hex')) as SimProcessor
    const c = p.conn
    return {
      opened: (timeoutMs: number) =>
        p.up
          ? Promise.resolve()
          : new Promise<void>((_, reject) =>
              time.after(Math.min(timeoutMs, DIAL_FAIL_MS), () =>
                reject(new MeshError('ERR_UNAVAILABLE', 'could not connect')),
              ),
            ),
      request: (method: string, payload: unknown, opts: { timeout: number }) => {
        if (method !== 'status') return Promise.reject(MeshError.badRequest(`no '${method}' here`))
        traffic.count(time, payload)
        if (!p.up || p.conn !== c) {
          return new Promise((_, reject) =>
            time.after(opts.timeout, () => reject(MeshError.timeout('no reply'))),
          )
        }
        const reply = p.status(payload)
        traffic.count(time, reply)
        return Promise.resolve(reply)
      },
      onClose: (fn: () => void) => c.closeFns.push(fn),
      destroy: () => {},
    }
  }
  const conns = new Map<Conn, ReturnType<typeof conn>>()
  const current = (key: Buffer) => {
    const p = pool.get(key.toString('hex')) as SimProcessor
    let c = conns.get(p.conn)
    if (!c) {
      c = conn(key)
      conns.set(p.conn, c)
    }
    return c
  }
  return {
    lookup: async () => [...pool.values()].map((p) => p.key),
    peer: current,
    dial: current,
    adopt: () => {},
    forget: () => {},
  } as unknown as NetFacility
}

function spread(samples: number[]): Spread {
  const s = [...samples].sort((a, b) => a - b)
  const at = (p: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))] ?? Number.NaN
  return { p50: at(0.5), p99: at(0.99), max: s[s.length - 1] ?? Number.NaN }
}

interface Running {
  lease: Lease
  p: SimProcessor
  model: string
  userId: string
  exclude: Set<string>
  done: boolean
}

/** Runs one simulation. */
export async function simulate(opts: SimOptions): Promise<SimResult> {
  const { processors: n, seconds, legacy = false, utilization = 0.5, seed = 1 } = opts
  const rand = seededRandom(seed)
  const registryOpts = { ...(legacy ? { beatBudgetPerSecond: 1e9 } : {}), ...opts.registry }
  const config = parseConfig(gatewayConfigSchema, { bootstrap: ['127.0.0.1:1'], registry: registryOpts })
  const time = new SimTime()
  const traffic = new Traffic()
  const pool = new Map<string, SimProcessor>()
  for (let i = 0; i < n; i++) {
    const models = MODELS.filter((_, j) => j === i % MODELS.length || rand() < 0.5)
    const p = new SimProcessor(i + 1, models, legacy)
    pool.set(p.id, p)
  }
  const logger = new LogFacility({ level: 'silent' }).logger
  const registry = new Registry()
  const events = new EventEmitter()
  let scheduler: Scheduler | null = null
  const pump = () => scheduler?.pump()
  const breakers = new Breakers({ routing: config.routing, logger, onCooldownEnd: pump })
  const discovery = new Discovery({
    net: simNet(pool, time, traffic),
    registry,
    config: config.registry,
    logger,
    events,
    breakers,
    onChange: pump,
    clock: () => time.now,
  })
  scheduler = new Scheduler({ routing: config.routing, registry, breakers, discovery })
  const sched = scheduler

  await discovery.refresh()
  traffic.counting = true

  const picks: number[] = []
  const releases: number[] = []
  const running = new Map<string, Set<Running>>()
  let leases = 0
  let waited = 0
  let failedOver = 0
  const cutAt = new Map<string, number>()
  const detectionMs: number[] = []

  const start = (model: string, userId: string, exclude: Set<string>) => {
    const t0 = process.hrtime.bigint()
    const pending = sched.lease(model, { userId, exclude })
    const t1 = process.hrtime.bigint()
    let immediate = true
    pending.then(
      (lease) => {
        leases++
        if (immediate) picks.push(Number(t1 - t0) / 1000)
        else waited++
        const p = pool.get(lease.entry.id) as SimProcessor
        p.mine++
        const r: Running = { lease, p, model, userId, exclude, done: false }
        const set = running.get(p.id) ?? new Set()
        set.add(r)
        running.set(p.id, set)
        time.after(-Math.log(1 - rand()) * SERVICE_MS, () => finish(r))
      },
      () => {},
    )
    // A lease given at once resolves in a microtask; one that waits, later.
    queueMicrotask(() => {
      immediate = false
    })
  }
  const finish = (r: Running) => {
    if (r.done) return
    // Cut off, it answers nothing: the request hangs until the gateway fails it over.
    if (!r.p.up) {
      time.after(STEP_MS * 10, () => finish(r))
      return
    }
    r.done = true
    r.p.mine--
    running.get(r.p.id)?.delete(r)
    const t0 = process.hrtime.bigint()
    r.lease.answered({ ttftMs: 150, completionTokens: 80, evalMs: 1900 })
    releases.push(Number(process.hrtime.bigint() - t0) / 1000)
  }
  const failOver = (entry: ProcessorEntry) => {
    const at = cutAt.get(entry.id)
    const set = running.get(entry.id)
    if (at !== undefined && set && set.size > 0) detectionMs.push(time.now - at)
    cutAt.delete(entry.id)
    for (const r of set ?? []) {
      r.done = true
      r.p.mine--
      failedOver++
      const verdict = r.lease.failed(
        new MeshError('ERR_UNAVAILABLE', 'processor unreachable', { rerouted: true }),
      )
      if (verdict.retry) start(r.model, r.userId, new Set([...r.exclude, entry.id]))
    }
    set?.clear()
  }
  events.on('unreachable', failOver)
  events.on('restarted', failOver)
  events.on('drop', failOver)

  // Churn: 1% of the processors (at least 2) go away at 30% of the run and come back at 60%:
  // half of them cut off silently (those running this gateway's requests first), half stopped.
  const procs = [...pool.values()]
  const endMs = seconds * 1000
  const churn = Math.max(2, Math.floor(n / 100))
  let cut: SimProcessor[] = []
  let stopped: SimProcessor[] = []
  time.after(endMs * 0.3, () => {
    const busyFirst = [...procs].sort((a, b) => b.mine - a.mine)
    cut = busyFirst.slice(0, Math.ceil(churn / 2))
    stopped = procs.filter((p) => !cut.includes(p)).slice(0, churn - cut.length)
    for (const p of cut) {
      p.up = false
      cutAt.set(p.id, time.now)
    }
    for (const p of stopped) p.stop()
  })
  time.after(endMs * 0.6, () => {
    for (const p of cut) p.up = true
    for (const p of stopped) p.restart()
  })

  const ratePerMs = (utilization * n * CAPACITY) / SERVICE_MS
  const models = MODELS.slice(0, -1)
  let nextTick = config.registry.heartbeatIntervalMs
  let busySum = 0
  let ticks = 0
  for (let t = STEP_MS; t <= endMs; t += STEP_MS) {
    await time.advanceTo(t)
    // Arrivals in this step: Poisson, drawn by inversion.
    let k = 0
    const mean = ratePerMs * STEP_MS
    for (let u = rand(), pk = Math.exp(-mean), cdf = pk; u > cdf && k < 10 * mean + 10; ) {
      k++
      pk *= mean / k
      cdf += pk
    }
    for (let i = 0; i < k; i++) {
      const model = models[Math.floor(rand() ** 2 * models.length)] as string
      start(model, `user-${Math.floor(rand() * 50)}`, new Set())
    }
    if (t % 1000 === 0) {
      // Other gateways' load moves on a tenth of the processors; one changes its models.
      for (let i = 0; i < n / 10; i++) {
        const p = procs[Math.floor(rand() * n)] as SimProcessor
        p.others = Math.floor(rand() * (CAPACITY + 1))
      }
      const p = procs[Math.floor(rand() * n)] as SimProcessor
      p.models = p.models.includes('phi3:mini')
        ? p.models.filter((m) => m !== 'phi3:mini')
        : [...p.models, 'phi3:mini']
    }
    if (t >= nextTick) {
      nextTick += config.registry.heartbeatIntervalMs
      for (const e of registry.values()) if (e.inflight > 0) busySum++
      ticks++
      void discovery.tick()
    }
    await settle()
  }
  traffic.counting = false
  await discovery.stop()
  breakers.close()
  sched.queue.clear(new MeshError('ERR_UNAVAILABLE', 'the simulation ended'))

  const sample = procs[0] as SimProcessor
  const v = sample.versions?.versionOf(sample.full()) ?? ''
  const full = encodeJSON(sample.status(null)).byteLength
  const beat = legacy ? full : encodeJSON(sample.status({ since: v })).byteLength
  return {
    processors: n,
    seconds,
    legacy,
    leases,
    waited,
    failedOver,
    pickUs: spread(picks),
    releaseUs: spread(releases),
    messagesPerSecond: traffic.messages / seconds,
    peakMessagesPerSecond: Math.max(0, ...traffic.perSecond.values()),
    payloadBytesPerSecond: traffic.bytes / seconds,
    fullReplyBytes: full,
    beatReplyBytes: beat,
    detectionMs,
    detectionBoundMs: detectionBoundMs(config.registry),
    busyProcessors: busySum / Math.max(1, ticks),
    servingAtEnd: [...registry.values()].filter((e) => e.state === 'serving').length,
  }
}
