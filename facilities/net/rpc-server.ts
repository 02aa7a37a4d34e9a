/**
 * The callee's side: serves a method table on the worker's key. Every handler gets a decoded
 * JSON payload and a CallContext; whatever it throws reaches the caller as a MeshError code,
 * and so does a reply over MAX_REPLY_BYTES (ERR_PAYLOAD_TOO_LARGE).
 * Apart from NetFacility because dispatch (decoding, errors, close watching, the log of bad
 * payloads) is its own concern.
 */
import type RPC from '@hyperswarm/rpc'
import type { RPCChannel, Server } from '@hyperswarm/rpc'
import type { KeyPair } from 'hyperdht'
import { MeshError } from '../../kernel/errors.js'
import type { Logger } from '../log.facility.js'
import { decodeJSON, encodeJSON, MAX_REPLY_BYTES } from './payload.js'
import { toWireError } from './wire-errors.js'

/** At most one log line per this long about payloads that could not be decoded. */
const BAD_PAYLOAD_LOG_MS = 10_000

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

export interface ServeOptions {
  /** Refuses a caller by its key before any method runs. */
  firewall?: ((remotePublicKey: Buffer) => boolean) | undefined
  maxMessageBytes: number
  log: Logger
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
 * Counts payloads that were empty or not JSON and logs them in one short line per
 * BAD_PAYLOAD_LOG_MS at most: a peer sending garbage must not flood the log.
 */
class BadPayloadLog {
  private count = 0
  private loggedAt = 0

  constructor(private readonly log: Logger) {}

  note(method: string): void {
    this.count++
    const now = Date.now()
    if (now - this.loggedAt < BAD_PAYLOAD_LOG_MS) return
    this.log.warn({ method, refused: this.count }, 'refused undecodable RPC payloads')
    this.loggedAt = now
    this.count = 0
  }
}

function contextOf(method: string, channel: RPCChannel): CallContext {
  return {
    method,
    remotePublicKey: channel.stream.remotePublicKey,
    channel,
    emit: (event, value) => {
      if (!channel.closed) channel.event(event, encodeJSON(value))
    },
    onClose: (fn) => onChannelClose(channel, fn),
  }
}

/**
 * A reply over MAX_REPLY_BYTES, refused before it is sent (protomux-rpc would close the
 * connection); a streamed answer goes in pieces, each far under it.
 */
function replyTooLarge(method: string, size: number): MeshError {
  return new MeshError(
    'ERR_PAYLOAD_TOO_LARGE',
    `the '${method}' reply is ${size} bytes, the limit is ${MAX_REPLY_BYTES}: ask for a stream (stream: true), which sends the answer in pieces, or for less (fewer tokens or logprobs)`,
    { size, limit: MAX_REPLY_BYTES },
  )
}

/** Starts an RPC server on `keyPair` answering `methods`. */
export async function serveMethods(
  rpc: RPC,
  keyPair: KeyPair,
  methods: MethodTable,
  opts: ServeOptions,
): Promise<Server> {
  const { maxMessageBytes: max, log, firewall } = opts
  const server = rpc.createServer(firewall ? { firewall } : {})
  const badPayloads = new BadPayloadLog(log)
  // Replies and events go out one by one, never corked into protomux batches: a peer that
  // gets a batch corks its own output while it handles it, so requests its handlers send
  // then leave as a batch too — and protomux holds the replies and events of a received
  // batch until every handler in it settles, which for a generation is its whole length.
  for (const [method, handler] of Object.entries(methods)) {
    server.respond(method, async (buf: Buffer | null, channel: RPCChannel) => {
      try {
        if (buf && buf.byteLength > max)
          throw MeshError.payloadTooLarge(`'${method}' request`, buf.byteLength, max)
        // Asked again at every call: who may call can change while a connection is open (a
        // vouched-for gateway revoked, its connection still opening when it was closed).
        // (hyperdht's sense: the firewall returns true to refuse.)
        if (firewall?.(channel.stream.remotePublicKey))
          throw new MeshError('ERR_FORBIDDEN', 'this peer may not call here (any more)')
        const reply = encodeJSON(await handler(decodeJSON(buf), contextOf(method, channel)))
        if (reply.byteLength > MAX_REPLY_BYTES) {
          log.warn({ method, bytes: reply.byteLength }, 'reply too large: refused')
          throw replyTooLarge(method, reply.byteLength)
        }
        return reply
      } catch (err) {
        if (!(err instanceof MeshError)) log.error({ err, method }, 'handler failed')
        else if (err.code === 'ERR_BAD_REQUEST' && err.reason.startsWith('payload ')) badPayloads.note(method)
        throw toWireError(err)
      }
    })
  }
  await server.listen(keyPair)
  return server
}
