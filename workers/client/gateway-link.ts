/**
 * The client's link to a gateway, and its failover: which gateway to dial (the configured
 * one; else the one used last, then those announced), rounds of dials with backoff, the
 * watchdog ping that notices a killed gateway, and which calls are sent again when the
 * gateway goes away under them. Apart from MeshClient, which only says what to send.
 */

import type { Logger } from '../../facilities/log.facility.js'
import type { NetFacility } from '../../facilities/net/net.facility.js'
import type { PeerConnection } from '../../facilities/net/peer-connection.js'
import type { ClientConfig } from '../../kernel/config.js'
import { MeshError } from '../../kernel/errors.js'

/** How long a gateway may take to answer the ping that confirms a new connection. */
const GATEWAY_PING_TIMEOUT_MS = 3_000
/** After a call failed on a connection that still looks open: how long its ping may take. */
const LIVENESS_TIMEOUT_MS = 2_000
/**
 * A call still waiting after this long has its gateway pinged (again each time as long): a
 * gateway that was killed leaves its connection looking open, and the call would otherwise
 * wait out its whole timeout (10 s for most calls) before the client looks for it again.
 */
const WATCHDOG_MS = 2_000
/** First wait between rounds of dials when no gateway answered; doubles up to the max. */
const FIND_RETRY_MS = 250
const FIND_RETRY_MAX_MS = 2_000
/**
 * Methods that change nothing on the gateway: sent again, to whichever gateway answers,
 * when the connection died under them. Anything else is sent again only if it never left.
 */
const IDEMPOTENT = new Set([
  'ping',
  'status',
  'models',
  'show',
  'ps',
  'usage',
  'whoami',
  'listKeys',
  'listInvites',
  'listUsers',
])

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))
const short = (key: Buffer) => key.toString('hex').slice(0, 8)

/** What the link needs of the client it serves. */
export interface LinkOwner {
  readonly net: NetFacility
  readonly log: Logger
  readonly config: ClientConfig
  /** Set once the client starts closing: no more looking, no more sending again. */
  readonly closing: Promise<void> | null
  ready(): Promise<void>
}

export interface RunOptions {
  /** Told when the gateway was lost under the call, before it is sent again; may throw to stop. */
  onLost?: (err: unknown) => void
  /** Whether the caller gave up (a cancelled stream): its call is not sent again. */
  stopped?: () => boolean
}

/**
 * `call`, with its gateway pinged every WATCHDOG_MS while it waits: a gateway that does not
 * answer is taken for dead and its connection closed, which fails the call at once (as a
 * lost gateway: see `GatewayLink.lost`) instead of after its timeout.
 */
async function watchdog<T>(gw: PeerConnection, call: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  let done = false
  const check = () => {
    gw.request('ping', null, { timeout: LIVENESS_TIMEOUT_MS }).then(
      () => {
        if (!done) timer = setTimeout(check, WATCHDOG_MS)
      },
      () => {
        if (!done) gw.destroy()
      },
    )
  }
  timer = setTimeout(check, WATCHDOG_MS)
  try {
    return await call
  } finally {
    done = true
    clearTimeout(timer)
  }
}

/** A gateway that is stopping refused the call before doing anything with it: safe to send again. */
function refusedForDrain(err: unknown): boolean {
  return err instanceof MeshError && err.details?.draining === true
}

/** The gateway a client talks to, found again when it goes away. */
export class GatewayLink {
  private gateway: PeerConnection | null = null
  /** The gateway used last: dialled first when looking again (a restarted gateway keeps its key). */
  private lastGateway: Buffer | null = null
  private finding: Promise<PeerConnection> | null = null

  constructor(private readonly owner: LinkOwner) {}

  /** The key of the gateway used (or tried) last, in hex. */
  get lastKeyHex(): string | undefined {
    return this.lastGateway?.toString('hex')
  }

  /** The gateway in use, found on the DHT (or the configured key) on first need. */
  async connect(): Promise<PeerConnection> {
    if (this.gateway && !this.gateway.closed) return this.gateway
    this.finding ??= this.find().finally(() => {
      this.finding = null
    })
    return this.finding
  }

  /**
   * Runs `send` on the gateway in use, under the watchdog. When the gateway goes away under
   * it, a method that changes nothing, or a call that never left (the connection was not
   * open, or a draining gateway refused it unread), runs again on whichever gateway answers
   * within `reconnect.timeoutMs`.
   * @returns the answer and the gateway that gave it
   */
  async run<T>(
    method: string,
    send: (gw: PeerConnection) => Promise<T>,
    opts: RunOptions = {},
  ): Promise<{ value: T; gateway: PeerConnection }> {
    const deadline = Date.now() + this.owner.config.reconnect.timeoutMs
    const resendable = IDEMPOTENT.has(method)
    while (true) {
      const gw = await this.connect()
      const sent = gw.open
      try {
        return { value: await watchdog(gw, send(gw)), gateway: gw }
      } catch (err) {
        const lost = await this.lost(err, gw)
        if (lost) opts.onLost?.(err)
        const taken = sent && !refusedForDrain(err)
        const giveUp = (taken && !resendable) || opts.stopped?.() || this.owner.closing
        if (!lost || giveUp || Date.now() >= deadline) throw err
        this.owner.log.debug({ method, err }, 'gateway lost: sending again')
      }
    }
  }

  /**
   * Dials the gateway used last, then the others announced on the DHT, in rounds with
   * backoff, until one answers a ping or `reconnect.timeoutMs` passes.
   * @throws ERR_UNAVAILABLE naming each gateway tried and why it failed
   */
  private async find(): Promise<PeerConnection> {
    const { owner } = this
    await owner.ready()
    const { timeoutMs, connectTimeoutMs } = owner.config.reconnect
    const deadline = Date.now() + timeoutMs
    const failures = new Map<string, string>()
    let wait = FIND_RETRY_MS
    while (!owner.closing) {
      for (const key of await this.candidates(failures)) {
        const left = deadline - Date.now()
        if (left <= 0 || owner.closing) break
        try {
          return await this.dial(key, Math.min(connectTimeoutMs, left))
        } catch (err) {
          const reason = MeshError.from(err).message
          failures.set(short(key), reason)
          owner.log.debug({ gateway: key.toString('hex'), reason }, 'gateway did not answer')
          owner.net.forget(key)
        }
      }
      const left = deadline - Date.now()
      if (left <= 0) break
      await sleep(Math.min(wait, left))
      wait = Math.min(wait * 2, FIND_RETRY_MAX_MS)
    }
    if (owner.closing) throw new MeshError('ERR_UNAVAILABLE', 'the client is closing')
    const tried = [...failures].map(([key, reason]) => `${key}: ${reason}`).join('; ')
    throw new MeshError(
      'ERR_UNAVAILABLE',
      `no gateway answered on mesh '${owner.config.mesh}' within ${timeoutMs} ms (${tried || 'none is announced on the DHT'})`,
      { tried: Object.fromEntries(failures) },
    )
  }

  /** The configured gateway; or the one used last, then those announced (records may be stale). */
  private async candidates(failures: Map<string, string>): Promise<Buffer[]> {
    const { config, net } = this.owner
    if (config.gateway) return [Buffer.from(config.gateway, 'hex')]
    let found: Buffer[] = []
    try {
      found = await net.lookup('gateway')
    } catch (err) {
      failures.set('lookup', MeshError.from(err).message)
    }
    const last = this.lastGateway
    return last ? [last, ...found.filter((key) => !key.equals(last))] : found
  }

  /** Opens a connection (its own timeout: a dial can be slow) and checks a gateway answers on it. */
  private async dial(key: Buffer, connectTimeoutMs: number): Promise<PeerConnection> {
    const peer = this.owner.net.peer(key)
    await peer.opened(connectTimeoutMs)
    const pong = await peer.request<{ role?: string; draining?: boolean }>('ping', null, {
      timeout: GATEWAY_PING_TIMEOUT_MS,
    })
    if (pong?.role !== 'gateway') {
      throw new MeshError('ERR_UNAVAILABLE', `peer is ${pong?.role ? `a ${pong.role}` : 'not a worker'}`)
    }
    // It answers while it stops, but takes nothing new: look for another, or for it to come back.
    if (pong.draining === true) throw new MeshError('ERR_UNAVAILABLE', 'the gateway is shutting down')
    if (this.lastGateway && !this.lastGateway.equals(key)) {
      this.owner.log.info(
        { from: this.lastGateway.toString('hex'), to: key.toString('hex') },
        'gateway changed',
      )
    }
    this.gateway = peer
    this.lastGateway = key
    peer.onClose(() => {
      if (this.gateway === peer) this.gateway = null
    })
    return peer
  }

  /**
   * Whether a call failed because its gateway went away rather than because the gateway
   * answered so: the connection closed, or it failed with ERR_UNAVAILABLE / ERR_TIMEOUT and
   * the gateway does not answer a ping either (it died, or is draining to stop). A lost
   * gateway's connection is dropped, so the next call looks again.
   */
  private async lost(err: unknown, gw: PeerConnection): Promise<boolean> {
    const code = err instanceof MeshError ? err.code : undefined
    if (code !== 'ERR_UNAVAILABLE' && code !== 'ERR_TIMEOUT') return false
    if (refusedForDrain(err)) {
      // It is stopping: it took nothing, and the next call looks for another gateway.
      gw.destroy()
    } else if (!gw.closed) {
      try {
        const pong = await gw.request<{ role?: string }>('ping', null, { timeout: LIVENESS_TIMEOUT_MS })
        if (pong?.role === 'gateway') return false
      } catch {}
      // Not net.forget(key): a connection to the same key made since (a restarted gateway) must stay.
      gw.destroy()
    }
    if (this.gateway === gw) this.gateway = null
    return true
  }
}
