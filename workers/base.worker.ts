import { randomBytes } from 'node:crypto'
import DHT, { type KeyPair } from 'hyperdht'
import type { Registry } from 'prom-client'
import ReadyResource from 'ready-resource'
import type { Facility } from '../facilities/facility.js'
import { LogFacility, type Logger } from '../facilities/log.facility.js'
import { createWorkerRegistry } from '../facilities/metrics/worker-metrics.js'
import { NetFacility } from '../facilities/net/net.facility.js'
import type { Handler, MethodTable } from '../facilities/net/rpc-server.js'
import { StoreFacility } from '../facilities/store.facility.js'
import type { BaseConfig } from '../kernel/config.js'
import { isLoopbackBootstrap } from '../kernel/config-bootstrap.js'
import { MeshError } from '../kernel/errors.js'
import { HEX32 } from '../kernel/util.js'
import { VERSION } from '../kernel/version.js'
import type { Health, HealthCheck } from '../kernel/wire.js'

export const IDENTITY_BEE = 'worker'
export const IDENTITY_KEY = 'identity/seed'
const SEED_BYTES = 32
/** How often a draining worker looks whether its work has ended. */
const DRAIN_POLL_MS = 25

export type Role = 'gateway' | 'processor' | 'client'

/** A facility a worker declares: started by ascending priority, closed in reverse. */
export interface FacilitySpec {
  name: string
  priority: number
  /** Called when its turn comes, so it can use facilities that started before it. */
  create: () => Facility
}

export interface WorkerOptions {
  /** Where log lines go (stderr by default). */
  logDestination?: NodeJS.WritableStream
  /**
   * Runs once the worker's facilities are open and before it serves anyone (e.g. the first
   * admin of a gateway, made before a peer could register under open registration).
   */
  beforeServe?: () => Promise<void>
}

export interface BaseStatus {
  role: Role
  version: string
  mesh: string
  publicKey: string
  /** New each time the process starts: the same key with another instance is a restarted peer. */
  instance: string
  uptimeMs: number
  inflight: number
  /** Stopping: finishing what it runs, taking nothing new. */
  draining: boolean
  /** `host:port` of its DHT node when a new worker can bootstrap through it, else null. */
  dhtAddress: string | null
}

/** What a draining worker still answers: who it is and how it stands (its metrics too), and cancels of its work. */
const ANSWERED_WHILE_DRAINING = new Set(['ping', 'status', 'health', 'metrics', 'cancel'])

/**
 * What every worker shares: validated config, facilities started in priority
 * order and closed in reverse, a persistent identity, an RPC method table with
 * `ping` and `status`, an announcement on its role topic, and a stop that
 * drains in-flight calls first.
 */
export abstract class BaseWorker<C extends BaseConfig = BaseConfig> extends ReadyResource {
  readonly role: Role
  readonly config: C
  readonly startedAt = Date.now()
  readonly instance = randomBytes(8).toString('hex')
  protected readonly logFacility: LogFacility
  private storeFacility: StoreFacility | null = null
  private netFacility: NetFacility | null = null
  private readonly started: Facility[] = []
  private inflight = 0
  private draining = false
  private drainingDone: Promise<void> | null = null
  private signalsHandled = false
  private readonly beforeServe: (() => Promise<void>) | undefined
  private metricsRegistry: Registry | null = null

  constructor(role: Role, config: C, opts: WorkerOptions = {}) {
    super()
    this.role = role
    this.config = config
    this.beforeServe = opts.beforeServe
    const logOpts: ConstructorParameters<typeof LogFacility>[0] = {
      level: config.log.level,
      bindings: { role },
    }
    if (opts.logDestination) logOpts.destination = opts.logDestination
    this.logFacility = new LogFacility(logOpts)
  }

  get log(): Logger {
    return this.logFacility.logger
  }

  get net(): NetFacility {
    if (!this.netFacility) throw new MeshError('ERR_UNAVAILABLE', `${this.role} is not started`)
    return this.netFacility
  }

  get store(): StoreFacility {
    if (!this.storeFacility) throw new MeshError('ERR_UNAVAILABLE', `${this.role} has no store`)
    return this.storeFacility
  }

  get publicKey(): Buffer {
    return this.net.publicKey
  }

  /** `publicKey` in hex, made once. */
  get publicKeyHex(): string {
    return this.net.publicKeyHex
  }

  /**
   * This worker's Prometheus registry, made on first use: the process's metrics, its RPC
   * connections and DHT calls; roles add their own series (facilities/metrics/).
   */
  get metricsRegister(): Registry {
    this.metricsRegistry ??= createWorkerRegistry({
      connections: () => this.netFacility?.connections ?? null,
      dht: () => this.netFacility,
    })
    return this.metricsRegistry
  }

  /** Facilities beyond log, store and net (priorities above 30). */
  protected facilities(): FacilitySpec[] {
    return []
  }

  /** Role-specific RPC methods; `ping` and `status` are added by the base. */
  protected methods(): MethodTable {
    return {}
  }

  /** Role-specific fields of `status`; `caller`: the peer that asked, when over RPC. */
  protected async statusInfo(_caller?: Buffer): Promise<Record<string, unknown>> {
    return {}
  }

  /** The `status` reply to a caller that sent `payload`: `full` unless a role answers shorter (processors: kernel/status-beat.ts). */
  protected statusReply(full: Record<string, unknown>, _payload: unknown): Record<string, unknown> {
    return full
  }

  /** Whether this worker listens for RPC and announces its role (clients do not). */
  protected get serves(): boolean {
    return true
  }

  /**
   * Who may call this worker: a function that returns true to refuse a peer at
   * the connection, or null for everyone. Checked once at start.
   */
  protected firewall(): ((remotePublicKey: Buffer) => boolean) | null {
    return null
  }

  /** A key pair this worker must use instead of the one kept in its store (e.g. derived from a secret). */
  protected fixedIdentity(): KeyPair | null {
    return null
  }

  /** Runs after every facility started and the server listens, before the announce. */
  protected async afterStart(): Promise<void> {}

  /** What this role's readiness depends on (beyond not stopping): see `health`. */
  protected async readiness(): Promise<HealthCheck[]> {
    return []
  }

  /**
   * Alive (it answers) and ready (every check of its role holds, and it neither stops nor is
   * drained): what `/healthz`, `/readyz` and RPC `health` answer. A check that throws is not ok.
   */
  async health(): Promise<Health> {
    let checks: HealthCheck[]
    try {
      checks = await this.readiness()
    } catch (err) {
      checks = [{ name: 'readiness', ok: false, detail: MeshError.from(err).message }]
    }
    const draining = this.draining || this.drained()
    if (this.draining) checks = [{ name: 'serving', ok: false, detail: 'stopping' }, ...checks]
    return { role: this.role, alive: true, ready: !draining && checks.every((c) => c.ok), draining, checks }
  }

  /** Drained for maintenance (a processor's `drain`): takes nothing new while it keeps running. */
  protected drained(): boolean {
    return false
  }

  /** Runs when the drain timed out: stop whatever is still running. */
  protected abortInflight(): void {}

  async localStatus(caller?: Buffer): Promise<BaseStatus & Record<string, unknown>> {
    const dht = this.netFacility?.dhtAddress
    return {
      role: this.role,
      version: VERSION,
      mesh: this.config.mesh,
      publicKey: this.publicKeyHex,
      instance: this.instance,
      uptimeMs: Date.now() - this.startedAt,
      inflight: this.inflight,
      draining: this.draining || this.drained(),
      dhtAddress: dht ? `${dht.host}:${dht.port}` : null,
      ...(await this.statusInfo(caller)),
    }
  }

  protected override async _open(): Promise<void> {
    try {
      await this.startFacility(this.logFacility)
      if (this.config.store) {
        this.storeFacility = new StoreFacility({ dir: this.config.store })
        await this.startFacility(this.storeFacility)
      }
      const keyPair = await this.identity()
      const loopback = isLoopbackBootstrap(this.config.bootstrap)
      const { host, port, firewalled, requestTimeoutMs, relays } = this.config.net
      const net = new NetFacility({
        bootstrap: this.config.bootstrap,
        mesh: this.config.mesh,
        keyPair,
        // On one host every node must bind loopback, and servers must not wait for hole-punching.
        host: host ?? (loopback ? '127.0.0.1' : undefined),
        port,
        firewalled: firewalled ?? (loopback ? false : undefined),
        requestTimeoutMs,
        relays: relays.map((k) => Buffer.from(k, 'hex')),
        logger: this.log,
      })
      this.netFacility = net
      await this.startFacility(net)
      const extra = [...this.facilities()].sort((a, b) => a.priority - b.priority)
      for (const spec of extra) await this.startFacility(spec.create())
      await this.beforeServe?.()
      if (this.serves) {
        const firewall = this.firewall()
        await net.serve(this.wrapMethods(), firewall ? { firewall } : {})
      }
      await this.afterStart()
      if (this.serves) await net.announce(this.role)
      this.log.info(
        { publicKey: keyPair.publicKey.toString('hex'), mesh: this.config.mesh },
        `${this.role} started`,
      )
    } catch (err) {
      await this.stopFacilities()
      throw err
    }
  }

  private async startFacility(fac: Facility): Promise<void> {
    await fac.ready()
    this.started.push(fac)
  }

  /** The key pair from the seed kept in this worker's store, made on first start. */
  private async identity(): Promise<KeyPair> {
    const fixed = this.fixedIdentity()
    if (fixed) return fixed
    if (!this.storeFacility) return DHT.keyPair(randomBytes(SEED_BYTES))
    const bee = await this.storeFacility.bee(IDENTITY_BEE)
    const entry = await bee.get<string>(IDENTITY_KEY)
    if (entry && HEX32.test(entry.value)) return DHT.keyPair(Buffer.from(entry.value, 'hex'))
    const seed = randomBytes(SEED_BYTES)
    await bee.put(IDENTITY_KEY, seed.toString('hex'))
    return DHT.keyPair(seed)
  }

  private wrapMethods(): MethodTable {
    const table: MethodTable = {
      ping: () => ({
        pong: true,
        role: this.role,
        publicKey: this.publicKeyHex,
        instance: this.instance,
        draining: this.draining,
        time: Date.now(),
      }),
      status: async (payload, ctx) => this.statusReply(await this.localStatus(ctx.remotePublicKey), payload),
      // Open like `ping`: what a load balancer or a monitor asks.
      health: () => this.health(),
      ...this.methods(),
    }
    const wrapped: MethodTable = {}
    for (const [name, handler] of Object.entries(table)) {
      wrapped[name] = ANSWERED_WHILE_DRAINING.has(name) ? handler : this.track(handler)
    }
    return wrapped
  }

  private track(handler: Handler): Handler {
    return async (payload, ctx) => {
      if (this.draining) {
        // `draining` tells a caller to send this elsewhere without holding it against us.
        throw new MeshError('ERR_UNAVAILABLE', `${this.role} is shutting down`, { draining: true })
      }
      this.inflight++
      try {
        return await handler(payload, ctx)
      } finally {
        this.inflight--
      }
    }
  }

  /** Work in flight: RPC calls, and what facilities serve themselves (HTTP requests). */
  private get busy(): number {
    let n = this.inflight
    for (const fac of this.started) n += fac.openRequests
    return n
  }

  /**
   * Stops taking work and waits for what runs, at most `drainTimeoutMs` (then it is
   * aborted): the worker's records leave the DHT, new RPC calls and HTTP requests are
   * refused (peers learn it from `status`: `draining`), running ones finish. `close()`
   * drains first; call this alone to let a worker finish before what it depends on stops.
   */
  drain(): Promise<void> {
    this.draining = true
    this.drainingDone ??= this.drainNow()
    return this.drainingDone
  }

  private async drainNow(): Promise<void> {
    for (const fac of this.started) fac.stopAccepting()
    // Found no more on the DHT while it drains; peers that know it learn from `status`.
    if (this.netFacility && this.serves) {
      await this.netFacility.withdraw().catch((err) => this.log.warn({ err }, 'withdraw failed'))
    }
    if (this.busy === 0) return
    this.log.info({ inflight: this.busy }, 'draining')
    const deadline = Date.now() + this.config.drainTimeoutMs
    while (this.busy > 0) {
      if (Date.now() >= deadline) {
        this.log.warn({ inflight: this.busy }, 'drain timed out, aborting in-flight work')
        this.abortInflight()
        return
      }
      await new Promise((resolve) => setTimeout(resolve, DRAIN_POLL_MS))
    }
    this.log.info('drained')
  }

  protected override async _close(): Promise<void> {
    await this.drain()
    await this.stopFacilities()
    this.log.info(`${this.role} stopped`)
  }

  private async stopFacilities(): Promise<void> {
    while (this.started.length) {
      const fac = this.started.pop() as Facility
      try {
        await fac.close()
      } catch (err) {
        this.log.error({ err, facility: fac.name }, 'facility failed to close')
      }
    }
  }

  /** SIGINT/SIGTERM stop the worker once (draining), then exit; a second signal exits at once. */
  handleSignals(onStopped: (code: number) => void = (code) => process.exit(code)): void {
    if (this.signalsHandled) return
    this.signalsHandled = true
    let stopping = false
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) {
        this.log.warn({ signal }, 'second signal, exiting now')
        onStopped(130)
        return
      }
      stopping = true
      this.log.info({ signal }, 'stopping')
      this.close().then(
        () => onStopped(0),
        (err) => {
          this.log.error({ err }, 'stop failed')
          onStopped(1)
        },
      )
    }
    process.on('SIGINT', stop)
    process.on('SIGTERM', stop)
  }
}
