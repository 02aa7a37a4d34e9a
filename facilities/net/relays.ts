/**
 * Blind relays: where hole-punching cannot work (both ends behind NATs that hyperdht cannot
 * punch through, e.g. a random-port NAT facing another NAT), a connection goes through a
 * reachable third peer that pairs the two UDX streams without seeing inside them (the Noise
 * encryption stays end to end). A worker tries every peer directly first; after a dial fails
 * with a hole-punch error it dials that peer through one of its relays (`net.relays`) for a
 * while, then tries directly again. `serveRelay` is the other side: `llm-mesh bootstrap
 * --relay` (a public host) runs one.
 */
import { Server as RelayServer } from 'blind-relay'
import type DHT from 'hyperdht'
import type { DHTServer, KeyPair, NoiseStream } from 'hyperdht'

/** hyperdht's codes for a dial that failed at hole-punching (a relay can still connect it). */
export const PUNCH_FAILURES: ReadonlySet<string> = new Set([
  'HOLEPUNCH_ABORTED',
  'HOLEPUNCH_DOUBLE_RANDOMIZED_NATS',
  'HOLEPUNCH_PROBE_TIMEOUT',
  'CANNOT_HOLEPUNCH',
  'REMOTE_NOT_HOLEPUNCHABLE',
  'REMOTE_NOT_HOLEPUNCHING',
])

/** How long a peer whose punch failed is dialed through a relay before a direct try again. */
export const RELAY_FOR_MS = 10 * 60_000
const MAX_REMEMBERED = 4096

/** Which peers to dial through a relay, and through which. */
export class RelayChoice {
  private readonly relays: Buffer[]
  /** Peer id (hex) → until when its dials go through a relay. */
  private readonly punchFailed = new Map<string, number>()
  private next = 0

  constructor(relays: Buffer[]) {
    this.relays = relays
  }

  get configured(): boolean {
    return this.relays.length > 0
  }

  /** The relay to dial `id` through, or null to dial it directly. */
  through(id: string, now = Date.now()): Buffer | null {
    const until = this.punchFailed.get(id)
    if (until === undefined || this.relays.length === 0) return null
    if (until <= now) {
      this.punchFailed.delete(id)
      return null
    }
    this.next = (this.next + 1) % this.relays.length
    return this.relays[this.next] ?? null
  }

  /** A dial to `id` failed with hyperdht's `code`; true when the next one will use a relay. */
  failed(id: string, code: string | undefined, now = Date.now()): boolean {
    if (!this.configured || !code || !PUNCH_FAILURES.has(code)) return false
    if (this.punchFailed.size >= MAX_REMEMBERED) this.punchFailed.clear()
    this.punchFailed.set(id, now + RELAY_FOR_MS)
    return true
  }
}

export interface RelayService {
  publicKey: Buffer
  /** Sessions (connected peers) now. */
  sessions(): number
  close(): Promise<void>
}

/**
 * What one relay carries at most. A relay is open to any peer of the DHT (it cannot know the
 * meshes it serves), so it bounds what one peer can make it hold: sessions in all and per
 * peer key, and pairings a session has asked for and not yet completed, or keeps running.
 */
export interface RelayLimits {
  maxSessions: number
  maxSessionsPerPeer: number
  maxPendingPerSession: number
  maxLinksPerSession: number
}

export const RELAY_LIMITS: RelayLimits = {
  maxSessions: 1024,
  maxSessionsPerPeer: 4,
  maxPendingPerSession: 8,
  maxLinksPerSession: 64,
}

/** blind-relay's own counts of a session (not in its typings): pairings asked for, and running. */
type SessionCounts = { _pairing?: Set<unknown>; _links?: Map<unknown, unknown> }

/** Serves as a blind relay on `dht` under `keyPair` (its key is what workers put in `net.relays`). */
export async function serveRelay(
  dht: DHT,
  keyPair: KeyPair,
  limits: RelayLimits = RELAY_LIMITS,
): Promise<RelayService> {
  const relay = new RelayServer({ createStream: (opts) => dht.createRawStream({ ...opts, framed: true }) })
  const open = new Map<NoiseStream, { peer: string; session: SessionCounts }>()
  const perPeer = new Map<string, number>()
  const server: DHTServer = dht.createServer({ shareLocalAddress: false }, (socket) => {
    socket.on('error', () => {})
    const peer = socket.remotePublicKey.toString('hex')
    const mine = perPeer.get(peer) ?? 0
    if (open.size >= limits.maxSessions || mine >= limits.maxSessionsPerPeer) {
      socket.destroy()
      return
    }
    perPeer.set(peer, mine + 1)
    // A pairing whose peer went away errors on the session: the relay goes on for the others.
    const session = relay.accept(socket, { id: socket.remotePublicKey }).on('error', () => {})
    open.set(socket, { peer, session: session as unknown as SessionCounts })
    socket.once('close', () => {
      open.delete(socket)
      const left = (perPeer.get(peer) ?? 1) - 1
      if (left > 0) perPeer.set(peer, left)
      else perPeer.delete(peer)
    })
  })
  // A session that asks for more pairings than it completes, or keeps too many, is cut off.
  const sweep = setInterval(() => {
    for (const [socket, { session }] of open) {
      const pending = session._pairing?.size ?? 0
      const links = session._links?.size ?? 0
      if (pending > limits.maxPendingPerSession || links > limits.maxLinksPerSession) socket.destroy()
    }
  }, 1_000)
  sweep.unref()
  await server.listen(keyPair)
  return {
    publicKey: keyPair.publicKey,
    sessions: () => open.size,
    close: async () => {
      clearInterval(sweep)
      await relay.close()
      await server.close()
    },
  }
}
