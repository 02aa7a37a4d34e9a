/**
 * Copies of models between processors, on a gateway's order (RPC methods for gateways only,
 * like every processor method: the firewall). A llama.cpp processor with a store keeps its
 * GGUF files' blocks in Hypercores of its Corestore (facilities/models/blob-store.ts) and
 * serves them on a key pair of its own, the models key (derived from its identity, stable
 * across restarts, advertised in `status` as `modelsKey`), to the receivers a gateway named:
 *
 * - `modelPublish { model }` (holder) → the manifest of MODEL.gguf (cached while the file is unchanged);
 * - `modelShare { key, peers }` (holder) → admits those receivers' models keys for SHARE_TTL_MS;
 * - `modelFetch { id, manifest, from, digest? }` (receiver, streamed) → dials the holders,
 *   fetches every block verified, checks the whole file's sha256, then puts MODEL.gguf in place
 *   (listed only then); progress chunks `{ status: 'copying', total, completed }`.
 *
 * Space: a holder's published blocks are a second copy of the file; they are dropped
 * SHARE_TTL_MS after the last share order. A receiver's blocks are dropped once its copy is in
 * place, or PARTIAL_TTL_MS after an unfinished copy (they are what a copy resumes from). Both
 * deadlines are kept in the store, so a restart keeps them.
 */
import { createHash } from 'node:crypto'
import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import Corestore from 'corestore'
import type { BlobCorestore } from 'hyperblobs'
import DHT, { type KeyPair } from 'hyperdht'
import type { BackendChoice } from '../../facilities/backends/backend.facility.js'
import { modelFileName } from '../../facilities/backends/llamacpp/model-folder.js'
import { DIGEST_RE } from '../../facilities/backends/llamacpp/model-pull.js'
import type { Backend } from '../../facilities/backends/types.js'
import { Facility } from '../../facilities/facility.js'
import type { Logger } from '../../facilities/log.facility.js'
import { blobCorestore, ModelBlobStore, type ModelManifest } from '../../facilities/models/blob-store.js'
import { ensureRoomForCopy, ensureRoomForPublish } from '../../facilities/models/disk-space.js'
import { parseManifest } from '../../facilities/models/manifest.js'
import { connectModels, type ModelServer, serveModels } from '../../facilities/models/replicate.js'
import type { NetFacility } from '../../facilities/net/net.facility.js'
import type { CallContext, Handler, MethodTable } from '../../facilities/net/rpc-server.js'
import type { StoreFacility } from '../../facilities/store.facility.js'
import { CancelToken } from '../../kernel/cancel.js'
import { MeshError } from '../../kernel/errors.js'
import { baseModel } from '../../kernel/inference.js'
import { isRecord } from '../../kernel/util.js'
import { progressSender } from './model-pull.js'

/** How long a receiver stays admitted, and a holder keeps a file's blocks, after a share order. */
export const SHARE_TTL_MS = 30 * 60_000
/** How long a receiver keeps the blocks of an unfinished copy for it to resume. */
export const PARTIAL_TTL_MS = 24 * 60 * 60_000
const MAX_HOLDERS = 16
/** A hold whose end is this far ahead when its timer fires was renewed (renewals add minutes). */
const RENEWED_MARGIN_MS = 5_000
const MAX_PEERS = 256
const MAX_ID_LENGTH = 128
const HEX64 = /^[0-9a-f]{64}$/
const MODEL_EXT = '.gguf'
/** Domain of the models key: another key pair than the RPC one, from the same secret. */
const MODELS_KEY_DOMAIN = 'llm-mesh/models-key/v1'
const HOLDS_BEE = 'model-share'

/** What of the processor sharing uses. */
export interface SharingProcessor {
  readonly config: { store?: string | undefined }
  readonly store: StoreFacility
  readonly net: NetFacility
  readonly backend: Backend
  readonly backendChoice: BackendChoice | null
  readonly log: Logger
}

/** What a receiver's `modelFetch` answers. */
export interface FetchReply {
  model: string
  digest: string
  size: number
  /** Bytes that came over the wire in this fetch (a resumed copy: less than `size`). */
  wireBytes: number
}

interface Hold {
  manifest: ModelManifest
  until: number
}

/** The models key pair of a processor whose identity is `identity`: stable, and not its RPC key. */
export function modelsKeyPair(identity: KeyPair): KeyPair {
  return DHT.keyPair(createHash('sha256').update(MODELS_KEY_DOMAIN).update(identity.secretKey).digest())
}

/** @throws ERR_BAD_REQUEST */
function hexKeys(v: unknown, field: string, max: number): string[] {
  if (!Array.isArray(v) || v.length === 0 || v.length > max || !v.every((k) => typeof k === 'string'))
    throw MeshError.badRequest(`request.${field}: 1 to ${max} keys in hex`)
  const keys = v.map((k: string) => k.toLowerCase())
  if (!keys.every((k) => HEX64.test(k))) throw MeshError.badRequest(`request.${field}: keys in hex`)
  return keys
}

/** @throws ERR_BAD_REQUEST */
function parseFetch(payload: unknown) {
  const p = isRecord(payload) ? payload : {}
  if (typeof p.id !== 'string' || p.id === '' || p.id.length > MAX_ID_LENGTH)
    throw MeshError.badRequest('request.id: a stream id')
  const manifest = parseManifest(p.manifest)
  if (!manifest.name.endsWith(MODEL_EXT)) throw MeshError.badRequest('model manifest: not a .gguf file')
  const model = modelFileName(manifest.name.slice(0, -MODEL_EXT.length))
  const from = hexKeys(p.from, 'from', MAX_HOLDERS)
  let digest: string | null = null
  if (p.digest !== undefined && p.digest !== null) {
    const m = typeof p.digest === 'string' ? DIGEST_RE.exec(p.digest) : null
    if (!m?.[1]) throw MeshError.badRequest('request.digest: sha256:<64 hex digits>')
    digest = m[1]
  }
  const t = p.blockTimeoutMs
  if (t !== undefined && (typeof t !== 'number' || !(t >= 100 && t <= 600_000)))
    throw MeshError.badRequest('request.blockTimeoutMs: 100 to 600000')
  return { id: p.id, manifest, model, from, digest, blockTimeoutMs: t as number | undefined }
}

async function sizeOf(path: string): Promise<number | null> {
  return stat(path).then(
    (s) => (s.isFile() ? s.size : null),
    () => null,
  )
}

export class ProcessorModelShare extends Facility {
  readonly name = 'model-share'
  private blobs: ModelBlobStore | null = null
  /**
   * A Corestore of its own (`<store>/models`) holds the model blobs: replicating it to an
   * admitted peer can reach model cores only, never the processor's other cores (its bees).
   */
  private cores: Corestore | null = null
  /** The last hold or release of each core key under way (they run one at a time per key). */
  private readonly locks = new Map<string, Promise<void>>()
  private server: ModelServer | null = null
  private keyPair: KeyPair | null = null
  private modelsDir = ''
  /** Receivers' models keys (hex) admitted by a share order, until when. */
  private readonly admitted = new Map<string, number>()
  /** Blocks kept (by core key): published ones to serve, received ones to resume; with their deadline. */
  private readonly holds = new Map<string, Hold & { timer: NodeJS.Timeout }>()
  /** Fetches in flight by `callerKey/id`, for `cancel`. */
  private readonly running = new Map<string, CancelToken>()

  /** `changed`: a model arrived, forget cached listings so the next `status` shows it. */
  constructor(
    private readonly processor: SharingProcessor,
    private readonly changed: () => void,
  ) {
    super()
  }

  /** What `status` adds: the key this processor serves models on, when it can share. */
  status(): { modelsKey?: string } {
    return this.server ? { modelsKey: this.server.publicKey.toString('hex') } : {}
  }

  protected override async _open(): Promise<void> {
    const p = this.processor
    const where = p.backendChoice?.kind === 'llamacpp' ? p.backendChoice.where : null
    if (!p.config.store || p.backend.kind !== 'llamacpp' || !where) return
    this.modelsDir = where
    const cores = new Corestore(join(p.store.dir, 'models'))
    const corestore = blobCorestore(cores)
    const blobs = new ModelBlobStore({ corestore })
    try {
      await blobs.ready()
    } catch (err) {
      await cores.close().catch(() => {})
      throw err
    }
    try {
      this.cores = cores
      this.blobs = blobs
      this.keyPair = modelsKeyPair(p.net.keyPair)
      await this.restoreHolds()
      this.server = await serveModels(p.net.node, corestore, {
        keyPair: this.keyPair,
        allow: (pk) => (this.admitted.get(pk.toString('hex')) ?? 0) > Date.now(),
      })
    } catch (err) {
      await this.stopHolds()
      await blobs.close()
      await cores.close()
      this.blobs = null
      this.cores = null
      throw err
    }
  }

  /** The Corestore of the model blobs (tests reach the cores it serves). */
  get corestore(): BlobCorestore {
    if (!this.cores) throw new MeshError('ERR_UNAVAILABLE', 'this processor does not share models')
    return blobCorestore(this.cores)
  }

  protected override async _close(): Promise<void> {
    for (const token of this.running.values()) token.abort()
    await this.server?.close()
    this.server = null
    await this.stopHolds()
    await this.blobs?.close()
    await this.cores?.close()
    this.blobs = null
    this.cores = null
  }

  /** The processor is stopping: copies under way stop now (their blocks stay, the next copy resumes). */
  override stopAccepting(): void {
    for (const token of this.running.values()) token.abort()
  }

  methods(): MethodTable {
    return {
      modelPublish: (payload) => this.publish(payload),
      modelShare: (payload) => this.share(payload),
      modelFetch: (payload, ctx) => this.fetch(payload, ctx),
    }
  }

  /** The `cancel` method: stops the caller's fetch `payload.id`, or else calls `next`. */
  orCancel(next: Handler): Handler {
    return (payload, ctx) => {
      const id = isRecord(payload) ? payload.id : undefined
      const token =
        typeof id === 'string' ? this.running.get(`${ctx.remotePublicKey.toString('hex')}/${id}`) : undefined
      if (!token) return next(payload, ctx)
      token.abort()
      return { cancelled: true }
    }
  }

  /** @throws ERR_UNSUPPORTED (no store, or not llama.cpp) */
  private store(): ModelBlobStore {
    if (!this.blobs) throw MeshError.unsupported('model copies', 'need a llama.cpp backend and a store')
    return this.blobs
  }

  /** @throws ERR_BAD_REQUEST, ERR_MODEL_NOT_FOUND, ERR_UNSUPPORTED */
  private async publish(payload: unknown): Promise<ModelManifest> {
    const blobs = this.store()
    const model = modelFileName(isRecord(payload) ? payload.model : undefined)
    const path = join(this.modelsDir, model + MODEL_EXT)
    const size = await sizeOf(path)
    if (size === null) throw MeshError.modelNotFound(model)
    // Its blocks go into the store: not at the cost of the store's own bees.
    if (!(await blobs.cached(path))) await ensureRoomForPublish(this.processor.store.dir, size)
    const manifest = await blobs.publish(path)
    await this.hold(manifest, SHARE_TTL_MS)
    this.processor.log.info({ model, size: manifest.size }, 'model published for copies')
    return manifest
  }

  /** @throws ERR_BAD_REQUEST, ERR_NOT_FOUND (not published here), ERR_UNSUPPORTED */
  private async share(payload: unknown): Promise<{ admitted: number; until: number }> {
    this.store()
    const p = isRecord(payload) ? payload : {}
    const key = typeof p.key === 'string' ? p.key.toLowerCase() : ''
    const peers = hexKeys(p.peers, 'peers', MAX_PEERS)
    const held = this.holds.get(key)
    if (!held) throw new MeshError('ERR_NOT_FOUND', 'no model published here under that key', { key })
    await this.hold(held.manifest, SHARE_TTL_MS)
    const until = Date.now() + SHARE_TTL_MS
    for (const peer of peers) this.admitted.set(peer, until)
    for (const [peer, at] of this.admitted) if (at <= Date.now()) this.admitted.delete(peer)
    return { admitted: peers.length, until }
  }

  /**
   * @throws ERR_BAD_REQUEST, ERR_DIGEST_MISMATCH (the caller's digest is not the manifest's),
   * ERR_CONFLICT (another file has that name, or the copy is running), ERR_INTEGRITY (blocks
   * or the whole file failed verification), ERR_TIMEOUT (no holder served), ERR_CANCELLED
   */
  private async fetch(payload: unknown, ctx: CallContext): Promise<FetchReply> {
    const blobs = this.store()
    const req = parseFetch(payload)
    const { manifest, model } = req
    if (req.digest !== null && req.digest !== manifest.sha256) {
      throw new MeshError(
        'ERR_DIGEST_MISMATCH',
        `the holder's file is sha256:${manifest.sha256}, expected sha256:${req.digest}`,
        { expected: `sha256:${req.digest}`, actual: `sha256:${manifest.sha256}` },
      )
    }
    const dest = join(this.modelsDir, manifest.name)
    const reply = { model, digest: `sha256:${manifest.sha256}`, size: manifest.size }
    if ((await sizeOf(dest)) !== null) {
      // Its digest as the backend lists it (read once per version of the file), not hashed again.
      const held = (await this.processor.backend.listModels()).find((m) => baseModel(m.name) === model)
      if (held?.digest.replace(/^sha256:/, '') === manifest.sha256) return { ...reply, wireBytes: 0 }
      throw new MeshError('ERR_CONFLICT', `model '${model}' exists here with another digest`, { model })
    }
    const stored = await blobs.storedBytes(manifest)
    await ensureRoomForCopy(this.modelsDir, this.processor.store.dir, manifest.size, stored)
    const key = `${ctx.remotePublicKey.toString('hex')}/${req.id}`
    if (this.running.has(key)) throw MeshError.badRequest(`request.id: '${req.id}' is already running`)
    const cancel = new CancelToken()
    this.running.set(key, cancel)
    const unwatch = ctx.onClose(() => cancel.abort())
    const progress = progressSender(ctx, req.id)
    const cores = this.corestore
    const dht = this.processor.net.node
    const links = req.from.map((k) =>
      connectModels(dht, cores, Buffer.from(k, 'hex'), this.keyPair ?? undefined),
    )
    const log = this.processor.log
    try {
      await this.hold(manifest, PARTIAL_TTL_MS)
      const res = await blobs.fetch(manifest, dest, {
        signal: cancel.signal,
        onProgress: (completed, total) => progress({ status: 'copying', total, completed }),
        ...(req.blockTimeoutMs ? { timeoutMs: req.blockTimeoutMs } : {}),
      })
      this.changed()
      // In place and verified: the blocks were only there to resume from.
      await this.release(manifest).catch((err) => log.warn({ err }, 'dropping received blocks failed'))
      progress({ status: 'success' })
      log.info({ model, size: res.size, wireBytes: res.wireBytes }, 'model copied from the mesh')
      return { ...reply, wireBytes: res.wireBytes }
    } catch (err) {
      log.warn({ model, err: MeshError.from(err).message }, 'model copy failed')
      throw err
    } finally {
      unwatch()
      this.running.delete(key)
      await Promise.allSettled(links.map((l) => l.close()))
    }
  }

  /** Keeps `manifest`'s blocks until `ttlMs` from now (or longer if already held longer). */
  private hold(manifest: ModelManifest, ttlMs: number): Promise<void> {
    return this.locked(manifest.key, async () => {
      const until = Math.max(Date.now() + ttlMs, this.holds.get(manifest.key)?.until ?? 0)
      const bee = await this.processor.store.bee(HOLDS_BEE)
      await bee.put(`hold/${manifest.key}`, { manifest, until })
      this.schedule({ manifest, until })
    })
  }

  /** Runs `fn` after every hold and release of `key` started before it (one at a time per core). */
  private locked(key: string, fn: () => Promise<void>): Promise<void> {
    const run = (this.locks.get(key) ?? Promise.resolve()).then(fn)
    const tail = run.catch(() => {})
    this.locks.set(key, tail)
    void tail.then(() => {
      if (this.locks.get(key) === tail) this.locks.delete(key)
    })
    return run
  }

  private schedule(h: Hold): void {
    const old = this.holds.get(h.manifest.key)
    if (old) clearTimeout(old.timer)
    const timer = setTimeout(
      () => {
        this.release(h.manifest, false).catch((err) =>
          this.processor.log.warn({ err }, 'dropping model blocks failed'),
        )
      },
      Math.min(Math.max(0, h.until - Date.now()), 2 ** 31 - 1),
    )
    timer.unref()
    this.holds.set(h.manifest.key, { ...h, timer })
  }

  /**
   * Drops the blocks of `manifest` from the store (the file, if any, stays). `now` false: its
   * hold's time is up (skipped when a share renewed it meanwhile); else at once (a copy in place).
   */
  private release(manifest: ModelManifest, now = true): Promise<void> {
    return this.locked(manifest.key, async () => {
      const held = this.holds.get(manifest.key)
      // Renewed meanwhile (by minutes; a timer may fire a few ms before Date.now() says): its own timer runs.
      if (!now && held && held.until > Date.now() + RENEWED_MARGIN_MS) return
      // Closing: the record stays, so the next start drops the blocks when their time is up.
      if (this.closing || !this.blobs) return
      if (held) clearTimeout(held.timer)
      this.holds.delete(manifest.key)
      const bee = await this.processor.store.bee(HOLDS_BEE)
      await bee.del(`hold/${manifest.key}`)
      await this.blobs.forget(manifest)
      // A copy killed midway (SIGKILL) and never resumed leaves its staging file.
      await this.blobs.dropPartial(join(this.modelsDir, manifest.name))
    })
  }

  private async restoreHolds(): Promise<void> {
    const bee = await this.processor.store.bee(HOLDS_BEE)
    for await (const entry of bee.createReadStream<Hold>({ gte: 'hold/', lt: 'hold0' })) {
      const manifest = parseManifest(entry.value.manifest)
      this.schedule({ manifest, until: Number(entry.value.until) || 0 })
    }
  }

  private async stopHolds(): Promise<void> {
    for (const h of this.holds.values()) clearTimeout(h.timer)
    this.holds.clear()
  }
}
