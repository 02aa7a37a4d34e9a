/**
 * The net facility workers declare: one DHT node and RPC endpoint per worker. It announces
 * and looks up role topics, serves a method table, and keeps one persistent connection per
 * peer. The pieces live beside it: the DHT node (dht-node.ts), the server's dispatch
 * (rpc-server.ts), a connection (peer-connection.ts), streaming (streaming.ts), errors on
 * the wire (wire-errors.ts) and the JSON payload (payload.ts).
 */
import RPC, { type Server } from '@hyperswarm/rpc'
import crypto from 'hypercore-crypto'
import type DHT from 'hyperdht'
import type { HostPort, KeyPair } from 'hyperdht'
import { MeshError } from '../../kernel/errors.js'
import { Facility } from '../facility.js'
import type { Logger } from '../log.facility.js'
import { type Bootstrap, forgetRelayRoute, reachableAddress, startDhtNode } from './dht-node.js'
import { MAX_MESSAGE_BYTES } from './payload.js'
import { PeerConnection } from './peer-connection.js'
import { RelayChoice } from './relays.js'
import { type MethodTable, serveMethods } from './rpc-server.js'

export const DEFAULT_REQUEST_TIMEOUT_MS = 10_000
/** DHT records live 20 min; refresh well before that. */
export const ANNOUNCE_INTERVAL_MS = 5 * 60_000
export const LOOKUP_TIMEOUT_MS = 5_000

export interface NetOptions {
  /** Explicit: 'public' for the public HyperDHT, or host:port nodes. Never defaulted. */
  bootstrap: Bootstrap
  mesh: string
  keyPair: KeyPair
  host?: string
  port?: number
  firewalled?: boolean
  requestTimeoutMs?: number
  maxMessageBytes?: number
  announceIntervalMs?: number
  /** Public keys of blind relays for peers a hole-punch cannot reach (facilities/net/relays.ts). */
  relays?: Buffer[]
  logger: Logger
}

/** Topic of a role in a mesh: hash(`llm-mesh/v1/<mesh>/<role>`). */
export function roleTopic(mesh: string, role: string): Buffer {
  return crypto.hash(Buffer.from(`llm-mesh/v1/${mesh}/${role}`))
}

/**
 * hyperdht + @hyperswarm/rpc: announce and look up role topics, serve a method
 * table, and keep one persistent connection per peer (pooled `rpc.request`
 * connections are torn down mid-request after `poolLinger`, which long
 * generations outlive).
 */
export class NetFacility extends Facility {
  readonly name = 'net'
  readonly keyPair: KeyPair
  /** The public key in hex, as peers and answers name this worker (made once). */
  readonly publicKeyHex: string
  readonly mesh: string
  private readonly opts: Required<Omit<NetOptions, 'port' | 'host' | 'firewalled' | 'relays'>> &
    Pick<NetOptions, 'port' | 'host' | 'firewalled'>
  private readonly relays: RelayChoice
  private readonly log: Logger
  private dht: DHT | null = null
  private rpc: RPC | null = null
  private server: Server | null = null
  private readonly peers = new Map<string, PeerConnection>()
  private readonly announced = new Map<string, Buffer>()
  private announceTimer: NodeJS.Timeout | null = null
  /** DHT announces and lookups started since the worker started (its metrics read them). */
  announces = 0
  lookups = 0

  constructor(opts: NetOptions) {
    super()
    this.keyPair = opts.keyPair
    this.publicKeyHex = opts.keyPair.publicKey.toString('hex')
    this.mesh = opts.mesh
    this.log = opts.logger
    this.opts = {
      ...opts,
      requestTimeoutMs: opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
      maxMessageBytes: opts.maxMessageBytes ?? MAX_MESSAGE_BYTES,
      announceIntervalMs: opts.announceIntervalMs ?? ANNOUNCE_INTERVAL_MS,
    }
    this.relays = new RelayChoice(opts.relays ?? [])
  }

  get publicKey(): Buffer {
    return this.keyPair.publicKey
  }

  /**
   * Where other nodes reach this worker's DHT node, usable as a bootstrap entry; null while it
   * is not a full DHT node (firewalled or ephemeral: it cannot admit a joining node).
   */
  get dhtAddress(): HostPort | null {
    return reachableAddress(this.dht)
  }

  /** The DHT node, for servers of other protocols on it (model replication). */
  get node(): DHT {
    if (!this.dht) throw new MeshError('ERR_UNAVAILABLE', 'net is not open')
    return this.dht
  }

  protected override async _open(): Promise<void> {
    const { bootstrap, keyPair, host, port, firewalled } = this.opts
    const dht = await startDhtNode({ bootstrap, keyPair, host, port, firewalled })
    this.dht = dht
    this.rpc = new RPC({ dht, keyPair })
  }

  /**
   * Starts the RPC server with a method table. Every handler gets a decoded JSON
   * payload; anything it throws reaches the caller as a MeshError code.
   */
  async serve(
    methods: MethodTable,
    opts: {
      firewall?: (remotePublicKey: Buffer) => boolean
    } = {},
  ): Promise<void> {
    if (!this.rpc) throw new MeshError('ERR_UNAVAILABLE', 'net is not open')
    this.server = await serveMethods(this.rpc, this.keyPair, methods, {
      firewall: opts.firewall,
      maxMessageBytes: this.opts.maxMessageBytes,
      log: this.log,
    })
  }

  /** Announces this worker's key on its role topic now and every `announceIntervalMs`. */
  async announce(role: string): Promise<void> {
    const topic = roleTopic(this.mesh, role)
    this.announced.set(role, topic)
    await this.announceTopic(topic)
    if (!this.announceTimer) {
      this.announceTimer = setInterval(() => {
        for (const t of this.announced.values()) {
          this.announceTopic(t).catch((err) => this.log.warn({ err }, 're-announce failed'))
        }
      }, this.opts.announceIntervalMs)
      this.announceTimer.unref()
    }
  }

  private async announceTopic(topic: Buffer): Promise<void> {
    if (!this.dht) return
    this.announces++
    await this.dht.announce(topic, this.keyPair).finished()
  }

  /** Public keys announced on a role topic (records may be stale: check liveness). */
  async lookup(role: string, timeoutMs = LOOKUP_TIMEOUT_MS): Promise<Buffer[]> {
    if (!this.dht) throw new MeshError('ERR_UNAVAILABLE', 'net is not open')
    this.lookups++
    const query = this.dht.lookup(roleTopic(this.mesh, role))
    const found = new Map<string, Buffer>()
    const timer = setTimeout(() => query.destroy(), timeoutMs)
    try {
      for await (const result of query) {
        for (const peer of result.peers) found.set(peer.publicKey.toString('hex'), peer.publicKey)
      }
    } catch (err) {
      // A destroyed query (our timeout) ends the iteration with an error; keep what was found.
      this.log.debug({ err, role }, 'lookup ended early')
    } finally {
      clearTimeout(timer)
    }
    found.delete(this.publicKeyHex)
    return [...found.values()]
  }

  /** Open RPC connections: those peers opened to this worker's server, and this worker's own to peers. */
  get connections(): { inbound: number; outbound: number } {
    let outbound = 0
    for (const conn of this.peers.values()) if (conn.open) outbound++
    return { inbound: this.server?.connections.size ?? 0, outbound }
  }

  /** The persistent connection to a peer, made on first use. `id`: the key in hex, when known. */
  peer(publicKey: Buffer, id = publicKey.toString('hex')): PeerConnection {
    const existing = this.peers.get(id)
    if (existing && !existing.closed) return existing
    const conn = this.connect(publicKey)
    this.pool(id, conn)
    return conn
  }

  /**
   * A new connection to a peer beside the one in use (a re-dial that must not disturb the
   * calls still running on the old one). The caller owns it: `adopt()` it or destroy it.
   */
  dial(publicKey: Buffer): PeerConnection {
    forgetRelayRoute(this.dht, publicKey.toString('hex'))
    return this.connect(publicKey)
  }

  /** Makes `conn` the connection in use for its peer; the one it replaces closes once its calls end. */
  adopt(conn: PeerConnection): void {
    const id = conn.publicKey.toString('hex')
    const old = this.peers.get(id)
    if (old === conn) return
    this.pool(id, conn)
    old?.retire()
  }

  private connect(publicKey: Buffer): PeerConnection {
    if (!this.rpc) throw new MeshError('ERR_UNAVAILABLE', 'net is not open')
    const id = publicKey.toString('hex')
    const relay = this.relays.through(id)
    const conn = new PeerConnection(
      this.rpc.connect(
        publicKey,
        relay ? { keyPair: this.keyPair, relayThrough: relay } : { keyPair: this.keyPair },
      ),
      publicKey,
      this.opts.requestTimeoutMs,
      this.opts.maxMessageBytes,
      relay !== null,
    )
    conn.onFailure.push((code) => {
      if (!relay && this.relays.failed(id, code))
        this.log.info({ peer: id, code }, 'hole-punching failed: dialing this peer through a relay next')
    })
    return conn
  }

  private pool(id: string, conn: PeerConnection): void {
    conn.onClose(() => {
      if (this.peers.get(id) !== conn) return
      this.peers.delete(id)
      forgetRelayRoute(this.dht, id)
    })
    this.peers.set(id, conn)
  }

  /** Drops the connection to a peer (e.g. after it stopped answering), and the route to it. */
  forget(publicKey: Buffer): void {
    const id = publicKey.toString('hex')
    const conn = this.peers.get(id)
    this.peers.delete(id)
    conn?.destroy()
    forgetRelayRoute(this.dht, id)
  }

  /**
   * Closes the connections peers with these hex keys opened to this worker's server (a
   * gateway a processor no longer trusts): their running calls end, and the firewall decides
   * whether they may connect again. Returns how many were closed.
   */
  disconnect(keys: Iterable<string>): number {
    const drop = new Set(keys)
    let closed = 0
    for (const channel of this.server?.connections ?? []) {
      const remote = channel.stream?.remotePublicKey
      if (!remote || !drop.has(remote.toString('hex'))) continue
      channel.destroy()
      closed++
    }
    return closed
  }

  /**
   * Takes this worker's records off the DHT and stops renewing them (a stopping worker is
   * found no more while it drains). Records outlive the node for 20 min unless withdrawn.
   */
  async withdraw(): Promise<void> {
    if (this.announceTimer) clearInterval(this.announceTimer)
    this.announceTimer = null
    const dht = this.dht
    const topics = [...this.announced.values()]
    this.announced.clear()
    if (dht) await Promise.allSettled(topics.map((t) => dht.unannounce(t, this.keyPair)))
  }

  protected override async _close(): Promise<void> {
    const dht = this.dht
    await this.withdraw()
    for (const conn of this.peers.values()) conn.destroy()
    this.peers.clear()
    await this.server?.close()
    this.server = null
    await this.rpc?.destroy()
    this.rpc = null
    // rpc did not create the DHT, so it left it to us.
    await dht?.destroy()
    this.dht = null
  }
}
