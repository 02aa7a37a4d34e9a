import RPC, { type Client, type RPCChannel, type Server } from '@hyperswarm/rpc'
import crypto from 'hypercore-crypto'
import DHT, { type HostPort, type KeyPair } from 'hyperdht'
import { type CancelToken, cancelError } from '../../kernel/cancel.js'
import { isErrorCode, MeshError } from '../../kernel/errors.js'
import { idSequence } from '../../kernel/util.js'
import { Facility } from '../facility.js'
import type { Logger } from '../log.facility.js'

/** protomux-rpc closes the whole connection above ~16 MiB; stay well under. */
export const MAX_MESSAGE_BYTES = 8 * 1024 * 1024
export const DEFAULT_REQUEST_TIMEOUT_MS = 10_000
/** DHT records live 20 min; refresh well before that. */
export const ANNOUNCE_INTERVAL_MS = 5 * 60_000
export const LOOKUP_TIMEOUT_MS = 5_000
/** How long a cancelled stream waits for the callee's final reply before giving up on it. */
export const CANCEL_GRACE_MS = 2_000
/**
 * How long a new connection may take to open (DHT lookup, handshake, hole-punch), kept
 * apart from a request's own timeout: a 1.5 s heartbeat that also had to dial would give
 * up on every dial slower than that, and start the next one from scratch.
 */
export const CONNECT_TIMEOUT_MS = 10_000
/** At most one log line per this long about payloads that could not be decoded. */
const BAD_PAYLOAD_LOG_MS = 10_000

/** Event names of the stream protocol (see docs/architecture.md). */
export const STREAM_CHUNK = 'chunk'
export const STREAM_CANCEL = 'cancel'

export type Bootstrap = 'public' | HostPort[]

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
  logger: Logger
}

/** What a method handler knows about its call. */
export interface CallContext {
  method: string
  remotePublicKey: Buffer
  /** Sends a one-way event to the caller on the same connection, ordered before the reply. */
  emit(event: string, value: unknown): void
  /** The connection; closes when the caller goes away. */
  channel: RPCChannel
  /**
   * Runs `fn` when the caller's connection closes (at once if it already has);
   * returns the function that cancels this. One listener per connection serves
   * every call on it, however many are in flight.
   */
  onClose(fn: () => void): () => void
}

export type Handler = (payload: unknown, ctx: CallContext) => unknown
export type MethodTable = Record<string, Handler>

export interface StreamChunk {
  id: string
  seq: number
  text: string
}

export interface CallOptions {
  timeout?: number
}

export interface StreamOptions extends CallOptions {
  /** Each chunk, in order; without it no chunk is expected (an answer given whole) and none is kept. */
  onChunk?: ((chunk: StreamChunk) => void) | undefined
  cancel?: CancelToken
}

/**
 * The sending side of one stream: numbers chunks and coalesces text that comes
 * faster than `windowMs` apart into one chunk. The first piece goes at once
 * (time to first token is never delayed); later pieces wait at most `windowMs`.
 * At a few hundred tokens/s and more, one event per token costs more than the
 * tokens (encryption, framing and a hop per message); a person reading cannot
 * tell 10 ms apart. `flush()` before the final reply keeps chunks ahead of it.
 */
export class ChunkWriter {
  private seq = 0
  private pending = ''
  private lastSent = 0
  private timer: NodeJS.Timeout | null = null

  constructor(
    private readonly send: (chunk: StreamChunk) => void,
    private readonly id: string,
    private readonly windowMs: number,
  ) {}

  /** Chunks sent so far. */
  get sent(): number {
    return this.seq
  }

  write(text: string): void {
    if (text === '') return
    this.pending += text
    if (this.timer) return
    const wait = this.lastSent + this.windowMs - performance.now()
    if (this.windowMs <= 0 || this.seq === 0 || wait <= 0) this.flush()
    else this.timer = setTimeout(() => this.flush(), wait)
  }

  flush(): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
    if (this.pending === '') return
    const text = this.pending
    this.pending = ''
    this.lastSent = performance.now()
    this.send({ id: this.id, seq: this.seq++, text })
  }
}

/** Topic of a role in a mesh: hash(`llm-mesh/v1/<mesh>/<role>`). */
export function roleTopic(mesh: string, role: string): Buffer {
  return crypto.hash(Buffer.from(`llm-mesh/v1/${mesh}/${role}`))
}

export function encodeJSON(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value === undefined ? null : value))
}

export function decodeJSON(buf: Buffer | null): unknown {
  // protomux-rpc hands a handler null for a zero-byte payload.
  if (!buf || buf.byteLength === 0) throw MeshError.badRequest('payload is empty: expected JSON')
  try {
    return JSON.parse(buf.toString('utf8'))
  } catch {
    throw MeshError.badRequest('payload is not valid JSON')
  }
}

/**
 * What a handler throws across RPC: protomux-rpc carries `message`, `code` and a
 * string `context` of the cause, so details ride in `context` as JSON.
 */
function toWireError(err: unknown): Error {
  const mesh = MeshError.from(err)
  const wire = new Error(mesh.reason) as Error & { code: string; context?: string }
  wire.code = mesh.code
  if (mesh.details) wire.context = JSON.stringify(mesh.details)
  return wire
}

/** Rebuilds the MeshError a remote handler threw, or names the transport failure. */
export function fromWireError(err: unknown, method: string): MeshError {
  if (err instanceof MeshError) return err
  const e = err as {
    code?: string
    message?: string
    cause?: { code?: string; message?: string; context?: string }
  }
  if (e?.code === 'REQUEST_ERROR' && e.cause && isErrorCode(e.cause.code)) {
    let details: Record<string, unknown> | undefined
    if (e.cause.context) {
      try {
        details = JSON.parse(e.cause.context) as Record<string, unknown>
      } catch {}
    }
    return new MeshError(e.cause.code, e.cause.message ?? 'request failed', details)
  }
  switch (e?.code) {
    case 'REQUEST_ERROR':
      return MeshError.internal(e.cause?.message ?? e.message ?? 'request failed')
    case 'UNKNOWN_METHOD':
      return new MeshError('ERR_UNKNOWN_METHOD', `unknown method '${method}'`, { method })
    case 'TIMEOUT_EXCEEDED':
      return MeshError.timeout(`'${method}' got no answer in time`)
    case 'CHANNEL_CLOSED':
    case 'CHANNEL_DESTROYED':
      return new MeshError('ERR_UNAVAILABLE', `connection closed during '${method}'`)
    default:
      return new MeshError('ERR_UNAVAILABLE', `'${method}' failed: ${e?.message ?? String(err)}`)
  }
}

/** Close callbacks per server-side connection, behind one 'close' listener each. */
const closeWatchers = new WeakMap<RPCChannel, Set<() => void>>()

function onChannelClose(channel: RPCChannel, fn: () => void): () => void {
  if (channel.closed) {
    fn()
    return () => {}
  }
  let set = closeWatchers.get(channel)
  if (!set) {
    const fns = new Set<() => void>()
    set = fns
    closeWatchers.set(channel, fns)
    channel.once('close', () => {
      closeWatchers.delete(channel)
      for (const f of fns) f()
    })
  }
  set.add(fn)
  const watchers = set
  return () => {
    watchers.delete(fn)
  }
}

/**
 * A persistent connection to one peer. Carries plain requests and streams:
 * the callee pushes `chunk` events `{ id, seq, text }` before its reply, the
 * caller may send a `cancel` event `{ id }`.
 */
export class PeerConnection {
  readonly publicKey: Buffer
  private readonly client: Client
  private readonly streams = new Map<string, (chunk: StreamChunk) => void>()
  private readonly defaultTimeout: number
  private readonly maxMessageBytes: number
  private readonly nextId = idSequence(4)
  /** Settles true once the connection is open, false if it closes first. */
  private readonly opening: Promise<boolean>
  private isOpen = false
  /** Requests (and streams) waiting for their reply. */
  private calls = 0
  private retired = false

  constructor(client: Client, publicKey: Buffer, defaultTimeout: number, maxMessageBytes: number) {
    this.client = client
    this.publicKey = publicKey
    this.defaultTimeout = defaultTimeout
    this.maxMessageBytes = maxMessageBytes
    this.opening = new Promise<boolean>((resolve) => {
      client.once('open', () => {
        this.isOpen = true
        resolve(true)
      })
      client.once('close', () => resolve(false))
    })
    client.rpc?.respond(STREAM_CHUNK, (buf: Buffer) => {
      let chunk: StreamChunk
      try {
        chunk = JSON.parse(buf.toString('utf8')) as StreamChunk
      } catch {
        return
      }
      this.streams.get(chunk.id)?.(chunk)
    })
  }

  get closed(): boolean {
    return this.client.closed
  }

  /** Whether the connection has opened (and not closed since). */
  get open(): boolean {
    return this.isOpen && !this.client.closed
  }

  /**
   * Waits until the connection is open, at most `timeoutMs`.
   * @throws ERR_UNAVAILABLE when it closes first (the peer was not found or refused us),
   *         ERR_TIMEOUT when it is still opening
   */
  async opened(timeoutMs = CONNECT_TIMEOUT_MS): Promise<void> {
    if (this.open) return
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), timeoutMs)
    })
    const result = await Promise.race([this.opening, late]).finally(() => clearTimeout(timer))
    const who = this.publicKey.toString('hex').slice(0, 8)
    if (result === 'late') throw MeshError.timeout(`no connection to ${who} within ${timeoutMs} ms`)
    if (!result || this.client.closed) throw new MeshError('ERR_UNAVAILABLE', `could not connect to ${who}`)
  }

  onClose(fn: () => void): void {
    this.client.once('close', fn)
  }

  /** @throws MeshError with the remote code, ERR_TIMEOUT, ERR_UNAVAILABLE, ERR_PAYLOAD_TOO_LARGE */
  async request<T = unknown>(method: string, payload: unknown, opts: CallOptions = {}): Promise<T> {
    const buf = encodeJSON(payload)
    if (buf.byteLength > this.maxMessageBytes) {
      throw MeshError.payloadTooLarge(`'${method}' request`, buf.byteLength, this.maxMessageBytes)
    }
    let res: Buffer
    this.calls++
    try {
      res = await this.client.request(method, buf, { timeout: opts.timeout ?? this.defaultTimeout })
    } catch (err) {
      throw fromWireError(err, method)
    } finally {
      if (--this.calls === 0 && this.retired) this.destroy()
    }
    return JSON.parse(res.toString('utf8')) as T
  }

  /** Closes the connection once the calls on it have ended (now, if none runs). */
  retire(): void {
    this.retired = true
    if (this.calls === 0) this.destroy()
  }

  /** Sends a one-way event; false when the connection is already closed. */
  event(method: string, payload: unknown): boolean {
    try {
      this.client.event(method, encodeJSON(payload))
      return true
    } catch {
      return false
    }
  }

  /**
   * Calls a streaming method. `payload.id` is set to a fresh stream id; chunks
   * arrive in order through `onChunk`; resolves with the callee's final reply.
   * Aborting `cancel` sends a `cancel` event and still resolves with what the
   * callee returns for the cancelled stream.
   */
  stream<T = unknown>(method: string, payload: Record<string, unknown>, opts: StreamOptions): Promise<T> {
    // Unique on this connection; a counter, not randomBytes: a syscall per request shows up.
    const id = this.nextId()
    const { cancel } = opts
    if (cancel?.aborted) {
      return Promise.reject(cancelError(cancel.reason))
    }
    const { onChunk } = opts
    if (onChunk) {
      let expected = 0
      this.streams.set(id, (chunk) => {
        // Events on one connection arrive in order; anything else is a broken peer: ignore it.
        if (chunk.seq !== expected) return
        expected++
        onChunk(chunk)
      })
    }
    const reply = this.request<T>(method, { ...payload, id }, opts)
    if (!cancel) {
      return onChunk
        ? reply.finally(() => {
            this.streams.delete(id)
          })
        : reply
    }
    // One promise wired to the reply and the token (not a race of two): this is every
    // gateway request's path.
    return new Promise<T>((resolve, reject) => {
      let graceTimer: NodeJS.Timeout | undefined
      let stopWatching: () => void = () => {}
      const settle = () => {
        stopWatching()
        clearTimeout(graceTimer)
        if (onChunk) this.streams.delete(id)
      }
      stopWatching = cancel.onAbort((reason) => {
        this.event(STREAM_CANCEL, { id })
        // A MeshError reason (e.g. the processor was dropped) fails now; a plain cancel
        // waits briefly for the callee's reply, which carries the partial result.
        if (reason instanceof MeshError && reason.code !== 'ERR_CANCELLED') {
          settle()
          reject(reason)
          return
        }
        graceTimer ??= setTimeout(() => {
          settle()
          reject(MeshError.cancelled())
        }, CANCEL_GRACE_MS)
      })
      reply.then(
        (value) => {
          settle()
          resolve(value)
        },
        (err) => {
          settle()
          reject(err)
        },
      )
    })
  }

  destroy(): void {
    this.client.destroy()
  }
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
  private readonly opts: Required<Omit<NetOptions, 'port' | 'host' | 'firewalled'>> &
    Pick<NetOptions, 'port' | 'host' | 'firewalled'>
  private readonly log: Logger
  private dht: DHT | null = null
  private rpc: RPC | null = null
  private server: Server | null = null
  private readonly peers = new Map<string, PeerConnection>()
  private readonly announced = new Map<string, Buffer>()
  private announceTimer: NodeJS.Timeout | null = null
  private badPayloads = 0
  private badPayloadLoggedAt = 0

  constructor(opts: NetOptions) {
    super()
    const {
      bootstrap,
      mesh,
      keyPair,
      host,
      port,
      firewalled,
      requestTimeoutMs = DEFAULT_REQUEST_TIMEOUT_MS,
      maxMessageBytes = MAX_MESSAGE_BYTES,
      announceIntervalMs = ANNOUNCE_INTERVAL_MS,
      logger,
    } = opts
    this.keyPair = keyPair
    this.publicKeyHex = keyPair.publicKey.toString('hex')
    this.mesh = mesh
    this.log = logger
    this.opts = {
      bootstrap,
      mesh,
      keyPair,
      host,
      port,
      firewalled,
      requestTimeoutMs,
      maxMessageBytes,
      announceIntervalMs,
      logger,
    }
  }

  get publicKey(): Buffer {
    return this.keyPair.publicKey
  }

  /**
   * Where other nodes reach this worker's DHT node, usable as a bootstrap entry; null while it
   * is not a full DHT node (firewalled or ephemeral: it cannot admit a joining node).
   */
  get dhtAddress(): HostPort | null {
    const dht = this.dht as unknown as { ephemeral: boolean; remoteAddress(): HostPort | null } | null
    if (!dht || dht.ephemeral) return null
    const addr = dht.remoteAddress()
    return addr ? { host: addr.host, port: addr.port } : null
  }

  protected override async _open(): Promise<void> {
    const { bootstrap, keyPair, host, port, firewalled } = this.opts
    const dhtOpts: ConstructorParameters<typeof DHT>[0] = { keyPair }
    // The public bootstrap is used only when asked for by name; hyperdht falls back to it when
    // `bootstrap` is absent, so always pass the list for any other choice.
    if (bootstrap !== 'public') dhtOpts.bootstrap = bootstrap
    if (host !== undefined) dhtOpts.host = host
    if (port !== undefined) dhtOpts.port = port
    if (firewalled !== undefined) dhtOpts.firewalled = firewalled
    // A node that others can reach at a fixed port (firewalled: false, `port` set) is a full DHT
    // node from the start: it stores records and routes queries, so the mesh keeps a DHT when its
    // bootstrap stops and new workers can join through it (`dhtAddress`). Its id follows its
    // address, so a restart comes back as the same node. Other nodes stay adaptive: dht-rpc keeps
    // them ephemeral (in nobody's routing table, storing nothing) for their first ~20 min, so a
    // worker that dies on a random port leaves no dead node for every query to wait on.
    if (firewalled === false && port !== undefined && port !== 0) dhtOpts.ephemeral = false
    const dht = new DHT(dhtOpts)
    const tried =
      bootstrap === 'public'
        ? 'the public HyperDHT bootstrap nodes'
        : bootstrap.map((b) => `${b.host}:${b.port}`).join(', ')
    try {
      await dht.ready()
    } catch (err) {
      await dht.destroy()
      throw new MeshError('ERR_UNAVAILABLE', `DHT failed to start: ${(err as Error).message}`, undefined, err)
    }
    // ready() resolves once the bootstrap query ends (~6 s of retries), whether or not a node
    // answered. An empty routing table means none did: every announce and lookup would then
    // fail ~20 s later with dht-rpc's "Too few nodes responded", which names no address.
    const table = dht as unknown as { toArray(): HostPort[] }
    if (table.toArray().length === 0) {
      await dht.destroy()
      throw new MeshError(
        'ERR_UNAVAILABLE',
        `no DHT node answered at ${tried}: is the bootstrap running and reachable from here?`,
        { bootstrap: tried },
      )
    }
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
    const server = this.rpc.createServer(opts.firewall ? { firewall: opts.firewall } : {})
    const max = this.opts.maxMessageBytes
    // Replies and events go out one by one, never corked into protomux batches: a peer that
    // gets a batch corks its own output while it handles it, so requests its handlers send
    // then leave as a batch too — and protomux holds the replies and events of a received
    // batch until every handler in it settles, which for a generation is its whole length.
    for (const [method, handler] of Object.entries(methods)) {
      server.respond(method, async (buf: Buffer | null, channel: RPCChannel) => {
        try {
          if (buf && buf.byteLength > max)
            throw MeshError.payloadTooLarge(`'${method}' request`, buf.byteLength, max)
          const ctx: CallContext = {
            method,
            remotePublicKey: channel.stream.remotePublicKey,
            channel,
            emit: (event, value) => {
              if (!channel.closed) channel.event(event, encodeJSON(value))
            },
            onClose: (fn) => onChannelClose(channel, fn),
          }
          return encodeJSON(await handler(decodeJSON(buf), ctx))
        } catch (err) {
          if (!(err instanceof MeshError)) this.log.error({ err, method }, 'handler failed')
          else if (err.code === 'ERR_BAD_REQUEST' && err.reason.startsWith('payload '))
            this.badPayload(method)
          throw toWireError(err)
        }
      })
    }
    await server.listen(this.keyPair)
    this.server = server
  }

  /** Counts a payload that was empty or not JSON; one short line per BAD_PAYLOAD_LOG_MS at most. */
  private badPayload(method: string): void {
    this.badPayloads++
    const now = Date.now()
    if (now - this.badPayloadLoggedAt < BAD_PAYLOAD_LOG_MS) return
    this.log.warn({ method, refused: this.badPayloads }, 'refused undecodable RPC payloads')
    this.badPayloadLoggedAt = now
    this.badPayloads = 0
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
    await this.dht.announce(topic, this.keyPair).finished()
  }

  /** Public keys announced on a role topic (records may be stale: check liveness). */
  async lookup(role: string, timeoutMs = LOOKUP_TIMEOUT_MS): Promise<Buffer[]> {
    if (!this.dht) throw new MeshError('ERR_UNAVAILABLE', 'net is not open')
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
    this.forgetRoute(publicKey.toString('hex'))
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
    return new PeerConnection(
      this.rpc.connect(publicKey, { keyPair: this.keyPair }),
      publicKey,
      this.opts.requestTimeoutMs,
      this.opts.maxMessageBytes,
    )
  }

  private pool(id: string, conn: PeerConnection): void {
    conn.onClose(() => {
      if (this.peers.get(id) !== conn) return
      this.peers.delete(id)
      this.forgetRoute(id)
    })
    this.peers.set(id, conn)
  }

  /** Drops the connection to a peer (e.g. after it stopped answering), and the route to it. */
  forget(publicKey: Buffer): void {
    const id = publicKey.toString('hex')
    const conn = this.peers.get(id)
    this.peers.delete(id)
    conn?.destroy()
    this.forgetRoute(id)
  }

  /**
   * Forgets the DHT relay nodes that reached a peer's last connection. hyperdht keeps them
   * without expiry and dials through them first; after the peer restarts they lead to its
   * old process, and the dial waits ~4 s for that to fail before it looks the peer up
   * (measured: 4.0 s in 2 of 5 SIGTERM restarts, 15-45 ms with the entry gone).
   */
  private forgetRoute(id: string): void {
    const dht = this.dht as unknown as { _relayAddressesCache?: { delete(id: string): void } } | null
    dht?._relayAddressesCache?.delete(id)
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
