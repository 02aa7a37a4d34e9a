import type { Duplex } from 'node:stream'
import type { BlobCorestore } from 'hyperblobs'

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

/** Replicates `store` over an authenticated connection (a HyperDHT socket) the caller has let through its firewall. */
export function replicateConnection(store: BlobCorestore, conn: Duplex): Duplex {
  const stream = store.replicate(conn)
  stream.on('error', () => {})
  return stream
}

function end(s: Duplex): Promise<void> {
  if (s.destroyed) return Promise.resolve()
  return new Promise((done) => {
    s.once('close', () => done())
    s.destroy()
  })
}
