/**
 * The caller's side of one peer: a persistent connection that carries plain requests and
 * streams, knows when it is open, and closes once retired and idle. Apart from NetFacility,
 * which keeps one of these per peer and decides when to dial, adopt and retire them.
 */
import type { Client } from '@hyperswarm/rpc'
import { type CancelToken, cancelError } from '../../kernel/cancel.js'
import { MeshError } from '../../kernel/errors.js'
import { idSequence } from '../../kernel/util.js'
import { encodeJSON } from './payload.js'
import { STREAM_CANCEL, STREAM_CHUNK, type StreamChunk } from './streaming.js'
import { fromWireError } from './wire-errors.js'

/** How long a cancelled stream waits for the callee's final reply before giving up on it. */
export const CANCEL_GRACE_MS = 2_000
/**
 * How long a new connection may take to open (DHT lookup, handshake, hole-punch), kept
 * apart from a request's own timeout: a short heartbeat that also had to dial would give
 * up on every slower dial, and start the next one from scratch.
 */
export const CONNECT_TIMEOUT_MS = 10_000

export interface CallOptions {
  timeout?: number
}

export interface StreamOptions extends CallOptions {
  /** Each chunk, in order; without it no chunk is expected (an answer given whole) and none is kept. */
  onChunk?: ((chunk: StreamChunk) => void) | undefined
  cancel?: CancelToken
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
  /** Stream ids, unique on this connection. */
  private readonly nextId = idSequence(4)
  /** Settles true once the connection is open, false if it closes first. */
  private readonly opening: Promise<boolean>
  private isOpen = false
  /** Why the DHT connection failed (hyperdht's code: PEER_NOT_FOUND, HOLEPUNCH_ABORTED, …). */
  private failure: Error | null = null
  /** Told hyperdht's code when the connection fails to open or breaks. */
  readonly onFailure: Array<(code: string | undefined) => void> = []
  /** Requests (and streams) waiting for their reply. */
  private calls = 0
  private retired = false

  /** Whether this connection goes through a blind relay (facilities/net/relays.ts). */
  readonly relayed: boolean

  constructor(
    client: Client,
    publicKey: Buffer,
    defaultTimeout: number,
    maxMessageBytes: number,
    relayed = false,
  ) {
    this.relayed = relayed
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
    // @hyperswarm/rpc swallows the connection's error; keep it to say why a dial failed.
    const stream = (client as unknown as { _stream?: NodeJS.EventEmitter })._stream
    stream?.once('error', (err: Error) => {
      this.failure = err
      for (const fn of this.onFailure) fn((err as { code?: string }).code)
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
    if (!result || this.client.closed) {
      const why = this.failure ? `: ${(this.failure as { code?: string }).code ?? this.failure.message}` : ''
      throw new MeshError('ERR_UNAVAILABLE', `could not connect to ${who}${why}`)
    }
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
    const id = this.nextId()
    const { cancel, onChunk } = opts
    if (cancel?.aborted) return Promise.reject(cancelError(cancel.reason))
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
    if (cancel) return this.cancellable(id, reply, cancel, onChunk !== undefined)
    return onChunk
      ? reply.finally(() => {
          this.streams.delete(id)
        })
      : reply
  }

  /**
   * The reply of stream `id`, wired to its cancel token: one promise settled by whichever
   * comes first, not a race of two (every gateway request takes this path).
   */
  private cancellable<T>(id: string, reply: Promise<T>, cancel: CancelToken, chunked: boolean): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let graceTimer: NodeJS.Timeout | undefined
      let stopWatching: () => void = () => {}
      const settle = () => {
        stopWatching()
        clearTimeout(graceTimer)
        if (chunked) this.streams.delete(id)
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
