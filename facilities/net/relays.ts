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
import type { DHTServer, KeyPair } from 'hyperdht'

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
  /** Pairings under way or running. */
  sessions(): number
  close(): Promise<void>
}

/** Serves as a blind relay on `dht` under `keyPair` (its key is what workers put in `net.relays`). */
export async function serveRelay(dht: DHT, keyPair: KeyPair): Promise<RelayService> {
  const relay = new RelayServer({ createStream: (opts) => dht.createRawStream({ ...opts, framed: true }) })
  const server: DHTServer = dht.createServer({ shareLocalAddress: false }, (socket) => {
    socket.on('error', () => {})
    // A pairing whose peer went away errors on the session: the relay goes on for the others.
    relay.accept(socket, { id: socket.remotePublicKey }).on('error', () => {})
  })
  await server.listen(keyPair)
  return {
    publicKey: keyPair.publicKey,
    sessions: () => [...relay.sessions].length,
    close: async () => {
      await relay.close()
      await server.close()
    },
  }
}
