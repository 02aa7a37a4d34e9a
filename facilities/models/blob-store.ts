import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { open, rename, rm, stat } from 'node:fs/promises'
import { basename, resolve } from 'node:path'
import type Corestore from 'corestore'
import type { Core } from 'corestore'
import Hyperbee from 'hyperbee'
import Hyperblobs, { type BlobCore, type BlobCorestore, type BlobId } from 'hyperblobs'
import { MeshError } from '../../kernel/errors.js'
import { errorMessage } from '../../kernel/util.js'
import { Facility } from '../facility.js'
import { claimModelFile, isModelFileClaimed } from './file-claims.js'
import { parseManifest } from './manifest.js'

export { parseManifest }

/** What a receiver needs to fetch and check one model file. */
export interface ModelManifest {
  /** The file's name (no folder). */
  name: string
  size: number
  /** Hex sha256 of the whole file, computed while publishing. */
  sha256: string
  /** Hex public key of the Hypercore holding the file (one core per published file). */
  key: string
  blob: BlobId
  blockSize: number
}

export interface FetchOptions {
  /** Bytes of the file written so far (local blocks included) and the file's size. */
  onProgress?: (bytes: number, total: number) => void
  signal?: AbortSignal
  /** How long to wait for any one block (no peer, a stalled peer, only peers that send bad data); default the store's. */
  timeoutMs?: number
}

export interface FetchResult {
  path: string
  size: number
  sha256: string
  /** Block bytes that arrived over replication during this fetch (not those already in the local core). */
  wireBytes: number
  /** Blocks a peer sent that failed Hypercore's verification (and were dropped). */
  rejectedBlocks: number
}

export interface ModelBlobStoreOptions {
  /** The processor's Corestore (or a namespace of it); the store uses its namespace `models` in it. */
  corestore: BlobCorestore
  /**
   * Block size of newly published files; default 256 KiB (Hyperblobs' own is
   * 64 KiB): a quarter of the requests, Merkle proofs and storage writes per
   * byte, for ~27% less CPU per MB copied (docs/benchmarks.md, issue 20).
   */
  blockSize?: number
  /** Default per-block wait of fetch; default 30 s. */
  timeoutMs?: number
}

interface CachedEntry {
  size: number
  mtimeMs: number
  manifest: ModelManifest
}

/** The processor's Corestore as the model store uses it (the repo's corestore typing covers only what the rest needs). */
export function blobCorestore(store: Corestore): BlobCorestore {
  return store as unknown as BlobCorestore
}

const DEFAULT_BLOCK_SIZE = 256 * 1024
const DEFAULT_TIMEOUT_MS = 30_000

/**
 * Model files as Hyperblobs on the processor's Corestore, one Hypercore per
 * published file: each model then has its own discovery key, so a receiver
 * opens and replicates exactly the core it wants, a sender can stop serving
 * one model by closing one core, and dropping a model is clearing one core.
 * (One core for all of a processor's blobs would make every receiver a peer of
 * the whole collection and tie every model's life to one append-only log.)
 *
 * Hypercore checks every block a peer sends against the core's signed Merkle
 * tree before storing it; a block that does not verify is dropped and the peer
 * paused ('verification-error'). The sha256 of the whole file is checked on
 * top, against the manifest, before the file is put in place.
 *
 * Resume: the receiver's core keeps every verified block, so a fetch run again
 * (after a crash, a restart, a lost peer) requests only the blocks it lacks;
 * the `.partial` file is only a staging copy, rewritten from the core each run.
 */
export class ModelBlobStore extends Facility {
  readonly name = 'model-blobs'
  readonly blockSize: number
  private readonly timeoutMs: number
  private readonly root: BlobCorestore
  private ns: BlobCorestore | null = null
  private index: Hyperbee | null = null
  private readonly inFlight = new Set<Promise<unknown>>()
  /** Publishes running, by absolute path: a second caller shares the first's promise. */
  private readonly publishing = new Map<string, Promise<ModelManifest>>()
  /** Aborted by close(): fetches waiting for peers stop at once instead of at their timeout. */
  private readonly stopping = new AbortController()
  /**
   * A session on every core this store has published or fetched, by hex key,
   * open until forget() or close(): Corestore closes a core that no session
   * holds a few seconds after it goes idle (its GC), and a core opened only
   * to serve a peer counts as idle, so without this a sender stopped serving
   * mid-copy (6 to 8 s into it) and the receiver waited out its timeout.
   */
  private readonly held = new Map<string, BlobCore>()

  constructor(opts: ModelBlobStoreOptions) {
    super()
    const { blockSize = DEFAULT_BLOCK_SIZE, timeoutMs = DEFAULT_TIMEOUT_MS } = opts
    if (!Number.isInteger(blockSize) || blockSize < 1024 || blockSize > 4 * 1024 * 1024)
      throw MeshError.badConfig(`blockSize must be an integer in [1024, 4 MiB], got ${blockSize}`)
    if (!(timeoutMs > 0)) throw MeshError.badConfig(`timeoutMs must be positive, got ${timeoutMs}`)
    this.root = opts.corestore
    this.blockSize = blockSize
    this.timeoutMs = timeoutMs
  }

  protected override async _open(): Promise<void> {
    const ns = this.root.namespace('models')
    const index = new Hyperbee(ns.get({ name: 'manifests' }) as unknown as Core, {
      keyEncoding: 'utf-8',
      valueEncoding: 'json',
    })
    await index.ready()
    this.ns = ns
    this.index = index
  }

  protected override async _close(): Promise<void> {
    this.stopping.abort()
    await Promise.allSettled([...this.inFlight])
    const held = [...this.held.values()]
    this.held.clear()
    await Promise.allSettled(held.map((core) => core.close()))
    await this.index?.close()
    this.index = null
    this.ns = null
  }

  /** The manifest of `filePath` published earlier and unchanged since (same size and mtime), or null. */
  async cached(filePath: string): Promise<ModelManifest | null> {
    const abs = resolve(filePath)
    const st = await stat(abs)
    const entry = await this.db().get<CachedEntry>(`path/${abs}`)
    if (!entry || entry.value.size !== st.size || entry.value.mtimeMs !== st.mtimeMs) return null
    return entry.value.manifest
  }

  /**
   * Streams `filePath` into a core of its own (named by path, size and mtime,
   * so an unchanged file maps to the same core) and returns its manifest; an
   * unchanged file already published returns the cached manifest at once.
   */
  async publish(filePath: string): Promise<ModelManifest> {
    const abs = resolve(filePath)
    const running = this.publishing.get(abs)
    if (running) return running
    const p = this.track(this.publishFile(abs))
    this.publishing.set(abs, p)
    const done = () => this.publishing.delete(abs)
    p.then(done, done)
    return p
  }

  private async publishFile(abs: string): Promise<ModelManifest> {
    const st = await stat(abs).catch((err) => {
      throw new MeshError('ERR_NOT_FOUND', `cannot publish ${abs}: ${errorMessage(err)}`, { path: abs }, err)
    })
    if (!st.isFile()) throw new MeshError('ERR_BAD_REQUEST', `${abs} is not a file`, { path: abs })
    const hit = await this.cached(abs)
    if (hit) {
      await this.hold(hit.key)
      return hit
    }
    const core = this.nsStore().get({ name: `blob/${abs}/${st.size}/${st.mtimeMs}` })
    try {
      await core.ready()
      const blobs = new Hyperblobs(core, { blockSize: this.blockSize })
      const { id, sha256 } = await writeBlob(blobs, abs, this.blockSize)
      if (id.byteLength !== st.size)
        throw new MeshError('ERR_CONFLICT', `${abs} changed while it was published`, { path: abs })
      const manifest: ModelManifest = {
        name: basename(abs),
        size: id.byteLength,
        sha256,
        key: hex(core.key),
        blob: id,
        blockSize: this.blockSize,
      }
      const entry: CachedEntry = { size: st.size, mtimeMs: st.mtimeMs, manifest }
      await this.db().put(`path/${abs}`, entry)
      await this.hold(manifest.key)
      return manifest
    } catch (err) {
      // A publish cut short (no space, the file changed) leaves no blocks that nothing names.
      if (core.length > 0) await core.clear(0, core.length).catch(() => {})
      throw err
    } finally {
      await core.close()
    }
  }

  /**
   * Fetches the file a manifest names into `destPath` from whichever peers
   * replicate its core with this store (see replicate.ts), verifying every
   * block as it arrives and the file's sha256 before renaming it into place.
   */
  async fetch(manifest: ModelManifest, destPath: string, opts: FetchOptions = {}): Promise<FetchResult> {
    const m = parseManifest(manifest)
    const dest = resolve(destPath)
    // Two fetches, or a fetch and a pull, into one file would mix their bytes.
    const release = claimModelFile(dest)
    const signal = opts.signal ? AbortSignal.any([opts.signal, this.stopping.signal]) : this.stopping.signal
    const p = this.track(this.fetchFile(m, dest, { ...opts, signal }))
    p.then(release, release)
    return p
  }

  /**
   * Drops the blocks of a model from this store (its core stays known, empty)
   * and forgets the published paths that named it: disk space back, and this
   * processor no longer serves it. A later fetch downloads it again.
   */
  async forget(manifest: ModelManifest): Promise<void> {
    const m = parseManifest(manifest)
    const db = this.db()
    for await (const entry of db.createReadStream<CachedEntry>({ gte: 'path/', lt: 'path0' }))
      if (entry.value.manifest.key === m.key) await db.del(entry.key)
    const core = this.nsStore().get({ key: Buffer.from(m.key, 'hex') })
    try {
      await core.ready()
      // The whole core: one file's, where a republish may have left an older range of its blocks.
      if (core.length > 0) await core.clear(0, core.length)
    } finally {
      await core.close()
    }
    const held = this.held.get(m.key)
    this.held.delete(m.key)
    await held?.close()
  }

  /** Bytes of `manifest`'s file whose blocks this store holds: what a copy stopped midway resumes from. */
  async storedBytes(manifest: ModelManifest): Promise<number> {
    const m = parseManifest(manifest)
    const core = this.nsStore().get({ key: Buffer.from(m.key, 'hex'), active: false })
    try {
      await core.ready()
      // A core never fetched here has no length yet: nothing stored.
      if (core.length === 0) return 0
      const { blockOffset, blockLength } = m.blob
      let blocks = 0
      for (let i = blockOffset; i < blockOffset + blockLength; i++) if (await core.has(i)) blocks++
      return Math.min(m.size, blocks * m.blockSize)
    } finally {
      await core.close()
    }
  }

  /** Removes the staging file a killed fetch into `destPath` left, unless a fetch into it runs. */
  async dropPartial(destPath: string): Promise<void> {
    const dest = resolve(destPath)
    if (!isModelFileClaimed(dest)) await rm(`${dest}.partial`, { force: true })
  }

  /** Keeps a session on the core of `key` open (see `held`); a no-op for a core already held. */
  private async hold(key: string): Promise<void> {
    if (this.held.has(key)) return
    const core = this.nsStore().get({ key: Buffer.from(key, 'hex'), active: false })
    this.held.set(key, core)
    await core.ready()
  }

  private async fetchFile(m: ModelManifest, dest: string, opts: FetchOptions): Promise<FetchResult> {
    opts.signal?.throwIfAborted()
    const core = this.nsStore().get({ key: Buffer.from(m.key, 'hex') })
    let wireBytes = 0
    let rejectedBlocks = 0
    const ondownload = (_index: number, bytes: number) => {
      wireBytes += bytes
    }
    const onreject = () => {
      rejectedBlocks++
    }
    core.on('download', ondownload)
    core.on('verification-error', onreject)
    const partial = `${dest}.partial`
    try {
      await core.ready()
      const blobs = new Hyperblobs(core, { blockSize: m.blockSize })
      const sha256 = await readBlob(blobs, m, partial, opts, opts.timeoutMs ?? this.timeoutMs).catch(
        (err) => {
          throw fetchError(err, m, rejectedBlocks)
        },
      )
      if (sha256 !== m.sha256)
        throw new MeshError(
          'ERR_INTEGRITY',
          `${m.name}: sha256 ${sha256} does not match the manifest's ${m.sha256}`,
          {
            name: m.name,
            expected: m.sha256,
            actual: sha256,
          },
        )
      await rename(partial, dest)
      await this.hold(m.key)
      return { path: dest, size: m.size, sha256, wireBytes, rejectedBlocks }
    } catch (err) {
      await rm(partial, { force: true })
      throw err
    } finally {
      core.off('download', ondownload)
      core.off('verification-error', onreject)
      await core.close()
    }
  }

  private track<T>(p: Promise<T>): Promise<T> {
    if (!this.opened || this.closing)
      return Promise.reject(new MeshError('ERR_UNAVAILABLE', 'model store is not open'))
    this.inFlight.add(p)
    const forget = () => this.inFlight.delete(p)
    p.then(forget, forget)
    return p
  }

  private db(): Hyperbee {
    if (!this.index) throw new MeshError('ERR_UNAVAILABLE', 'model store is not open')
    return this.index
  }

  private nsStore(): BlobCorestore {
    if (!this.ns) throw new MeshError('ERR_UNAVAILABLE', 'model store is not open')
    return this.ns
  }
}

/** Appends the file as blocks of exactly `blockSize` (the last one shorter), hashing as it reads. */
async function writeBlob(
  blobs: Hyperblobs,
  abs: string,
  blockSize: number,
): Promise<{ id: BlobId; sha256: string }> {
  const hash = createHash('sha256')
  const fh = await open(abs, 'r')
  const ws = blobs.createWriteStream()
  const closed = once(ws, 'close')
  closed.catch(() => {})
  try {
    for (;;) {
      const block = Buffer.allocUnsafe(blockSize)
      let filled = 0
      while (filled < blockSize) {
        const { bytesRead } = await fh.read(block, filled, blockSize - filled, null)
        if (bytesRead === 0) break
        filled += bytesRead
      }
      if (filled === 0) break
      const chunk = filled === blockSize ? block : block.subarray(0, filled)
      hash.update(chunk)
      if (!ws.write(chunk)) await Promise.race([once(ws, 'drain'), closed])
      if (filled < blockSize) break
    }
    ws.end()
    await closed
  } catch (err) {
    ws.destroy()
    throw err
  } finally {
    await fh.close()
  }
  return { id: ws.id, sha256: hash.digest('hex') }
}

/** Reads the blob (from local blocks and peers) into `partial`, returns its sha256. */
async function readBlob(
  blobs: Hyperblobs,
  m: ModelManifest,
  partial: string,
  opts: FetchOptions,
  timeout: number,
): Promise<string> {
  const hash = createHash('sha256')
  const fh = await open(partial, 'w')
  const rs = blobs.createReadStream(m.blob, { timeout })
  const onabort = () => rs.destroy(new MeshError('ERR_CANCELLED', `fetch of ${m.name} aborted`))
  opts.signal?.addEventListener('abort', onabort, { once: true })
  // An abort before the listener was added would go unseen: the whole file would download first.
  if (opts.signal?.aborted) onabort()
  let bytes = 0
  try {
    opts.onProgress?.(0, m.size)
    for await (const chunk of rs) {
      hash.update(chunk)
      await fh.write(chunk)
      bytes += chunk.byteLength
      opts.onProgress?.(bytes, m.size)
    }
    opts.signal?.throwIfAborted()
  } finally {
    opts.signal?.removeEventListener('abort', onabort)
    rs.destroy()
    await fh.close()
  }
  if (bytes !== m.size)
    throw new MeshError('ERR_INTEGRITY', `${m.name}: got ${bytes} bytes, the manifest says ${m.size}`, {
      name: m.name,
    })
  return hash.digest('hex')
}

function fetchError(err: unknown, m: ModelManifest, rejectedBlocks: number): MeshError {
  if (err instanceof MeshError) return err
  if ((err as { name?: string })?.name === 'AbortError')
    return new MeshError('ERR_CANCELLED', `fetch of ${m.name} aborted`, undefined, err)
  const code = (err as { code?: unknown })?.code
  if (rejectedBlocks > 0)
    return new MeshError(
      'ERR_INTEGRITY',
      `${m.name}: ${rejectedBlocks} block(s) from peers failed verification and no peer sent valid ones`,
      { name: m.name, rejectedBlocks },
      err,
    )
  if (code === 'REQUEST_TIMEOUT' || code === 'BLOCK_NOT_AVAILABLE')
    return new MeshError('ERR_TIMEOUT', `${m.name}: no peer served its blocks in time`, { name: m.name }, err)
  return new MeshError('ERR_UNAVAILABLE', `${m.name}: ${errorMessage(err)}`, { name: m.name }, err)
}

function hex(key: Buffer | null): string {
  if (!key) throw new MeshError('ERR_INTERNAL', 'core has no key after ready()')
  return key.toString('hex')
}
