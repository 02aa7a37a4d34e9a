import type { Duplex } from 'node:stream'
import type { BlobCorestore } from 'hyperblobs'
import type DHT from 'hyperdht'
import type { KeyPair, NoiseStream } from 'hyperdht'

/**
 * Replication of model cores between two processors' Corestores.
 *
 * `store.replicate(stream)` runs Hypercore's replication protocol over any
 * Noise secret stream, which is what a HyperDHT connection is; every core of
 * the store that the remote asks for by discovery key is served from disk.
 * The test pipes two raw streams (`replicate(true)` / `replicate(false)`).
 *
 * Trust rule (for the wiring into processors): only processors that trust the
 * same gateway exchange models, the processor firewall extended to models.
 * - The gateway decides a copy: it sends the receiver (over the RPC it already
 *   authenticates) the manifest and the public keys of the processors that
 *   hold the file.
 * - The receiver dials only those keys (`dht.connect(pk)`; the Noise
 *   handshake proves the remote holds that key) and replicates on that
 *   connection only.
 * - The sender's replication server (`dht.createServer({ firewall })`, its own
 *   key pair or a topic of the model's discovery key) accepts a connection
 *   only from a processor key its gateway vouched for: the gateway tells the
 *   sender "processor X will fetch model K" with the same copy order, or
 *   hands out processor keys in its status beats. Anything else is refused in
 *   the firewall before a byte of the protocol runs.
 * - A manifest key is unguessable from outside (it is not the discovery key),
 *   so even a peer that connects cannot ask for a model it was not told of;
 *   and whatever a peer sends is verified block by block against the key.
 */
export interface Replication {
  /** Ends both sides; resolves when both streams are closed. */
  close(): Promise<void>
}

/** Replicates `a` and `b` over a pair of in-process streams (tests, one-host tools). */
export function replicateStores(a: BlobCorestore, b: BlobCorestore): Replication {
  const sa = a.replicate(true)
  const sb = b.replicate(false)
  sa.pipe(sb).pipe(sa)
  // A store that closes first destroys its side; the other side sees an error that is expected.
  sa.on('error', () => {})
  sb.on('error', () => {})
  return { close: () => Promise.all([end(sa), end(sb)]).then(() => {}) }
}

/**
 * Replicates `store` over an authenticated connection: a HyperDHT socket (a
 * Noise secret stream) the caller has let through its firewall. A plain
 * Duplex (TCP) must be wrapped in a NoiseSecretStream first.
 */
export function replicateConnection(store: BlobCorestore, conn: NoiseStream): Duplex {
  const stream = store.replicate(conn as unknown as Duplex)
  stream.on('error', () => {})
  return stream
}

export interface ModelServer {
  readonly publicKey: Buffer
  /** Connections let through so far (and refused ones), for logs and tests. */
  readonly stats: { accepted: number; refused: number }
  close(): Promise<void>
}

/**
 * A processor serving its model cores on `keyPair` over the DHT, to the peers
 * `allow` accepts only (the processor's own firewall decides: processors its
 * gateways vouch for). The refusal happens in the DHT handshake, before any
 * replication message.
 */
export async function serveModels(
  dht: DHT,
  store: BlobCorestore,
  opts: { keyPair: KeyPair; allow: (remotePublicKey: Buffer) => boolean },
): Promise<ModelServer> {
  const conns = new Set<NoiseStream>()
  const stats = { accepted: 0, refused: 0 }
  const firewall = (remotePublicKey: Buffer) => {
    const ok = opts.allow(remotePublicKey)
    if (ok) stats.accepted++
    else stats.refused++
    return !ok
  }
  // The repo's hyperdht typing lists only the server options the rest uses; `firewall` is hyperdht's own.
  const serverOpts = { firewall } as { shareLocalAddress?: boolean }
  const server = dht.createServer(serverOpts, (conn) => {
    conns.add(conn)
    conn.on('close', () => conns.delete(conn))
    conn.on('error', () => {})
    replicateConnection(store, conn)
  })
  await server.listen(opts.keyPair)
  return {
    publicKey: server.publicKey,
    stats,
    async close() {
      for (const c of conns) c.destroy()
      await server.close()
    },
  }
}

/** Connects to a processor serving models (its public key, as the gateway named it) and replicates with it. */
export function connectModels(
  dht: DHT,
  store: BlobCorestore,
  remotePublicKey: Buffer,
  keyPair?: KeyPair,
): Replication {
  const conn = dht.connect(remotePublicKey, keyPair ? { keyPair } : {})
  conn.on('error', () => {})
  replicateConnection(store, conn)
  return {
    close: () =>
      conn.destroyed
        ? Promise.resolve()
        : new Promise<void>((done) => {
            conn.once('close', () => done())
            conn.destroy()
          }),
  }
}

function end(s: Duplex): Promise<void> {
  if (s.destroyed) return Promise.resolve()
  return new Promise((done) => {
    s.once('close', () => done())
    s.destroy()
  })
}
