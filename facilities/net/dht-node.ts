/**
 * This worker's HyperDHT node: which bootstrap it joins (the public one only when named),
 * whether it is a full node from the start, and the checks and internals of hyperdht the
 * rest of the net facility needs (its reachable address, its relay route cache). Apart
 * because starting a node right is its own set of decisions.
 */
import DHT, { type HostPort, type KeyPair } from 'hyperdht'
import { MeshError } from '../../kernel/errors.js'

/** Explicit: 'public' for the public HyperDHT, or host:port nodes. Never defaulted. */
export type Bootstrap = 'public' | HostPort[]

export interface DhtNodeOptions {
  bootstrap: Bootstrap
  keyPair: KeyPair
  host?: string | undefined
  port?: number | undefined
  firewalled?: boolean | undefined
}

/** The options hyperdht gets for `opts`. */
function dhtOptions(opts: DhtNodeOptions): ConstructorParameters<typeof DHT>[0] {
  const { bootstrap, keyPair, host, port, firewalled } = opts
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
  return dhtOpts
}

/**
 * Starts a DHT node and checks that some bootstrap node answered it.
 * @throws ERR_UNAVAILABLE naming the bootstrap tried, when the node fails or nobody answered
 */
export async function startDhtNode(opts: DhtNodeOptions): Promise<DHT> {
  const { bootstrap } = opts
  const dht = new DHT(dhtOptions(opts))
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
  return dht
}

/**
 * Where other nodes reach `dht`, usable as a bootstrap entry; null while it is not a full
 * DHT node (firewalled or ephemeral: it cannot admit a joining node).
 */
export function reachableAddress(dht: DHT | null): HostPort | null {
  const node = dht as unknown as { ephemeral: boolean; remoteAddress(): HostPort | null } | null
  if (!node || node.ephemeral) return null
  const addr = node.remoteAddress()
  return addr ? { host: addr.host, port: addr.port } : null
}

/**
 * Forgets the DHT relay nodes that reached a peer's last connection (`id`: its key in hex).
 * hyperdht keeps them without expiry and dials through them first; after the peer restarts
 * they lead to its old process, and the dial waits ~4 s for that to fail before it looks
 * the peer up (measured in SIGTERM restarts; tens of ms with the entry gone).
 */
export function forgetRelayRoute(dht: DHT | null, id: string): void {
  const node = dht as unknown as { _relayAddressesCache?: { delete(id: string): void } } | null
  node?._relayAddressesCache?.delete(id)
}
