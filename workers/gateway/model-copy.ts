/**
 * Copying a model from processor to processor (a pull without a `source` onto llama.cpp
 * processors): the gateway picks a holder (a live llama.cpp processor that lists the model
 * and advertises a `modelsKey`), asks it to publish the file (`modelPublish` → manifest) and
 * to admit the receiver (`modelShare`), then asks the receiver to fetch it (`modelFetch`,
 * streamed), passing its progress on tagged by the receiver. The receiver verifies every
 * block and the whole file's sha256 before it lists the model (workers/processor/model-share.ts).
 *
 * Only processors of one gateway's mesh exchange models: the gateway names both sides, over
 * the RPC connections their firewalls admitted it on, and a holder admits only the models keys
 * a gateway named in a share order.
 */
import type { PullProgress, PullResult } from '../../facilities/backends/types.js'
import type { ModelManifest } from '../../facilities/models/blob-store.js'
import type { StreamChunk } from '../../facilities/net/streaming.js'
import { type ProcessorEntry, serves } from '../../facilities/router/processor-entry.js'
import type { RouterFacility } from '../../facilities/router/router.facility.js'
import type { CancelToken } from '../../kernel/cancel.js'
import { MeshError } from '../../kernel/errors.js'
import { baseModel } from '../../kernel/inference.js'
import { failedOn } from './model-outcome.js'
import type { GatewayPullRequest, PullingGateway, PullOutcome, TaggedProgress } from './model-pull.js'

/** A copy may take hours (a large model over a slow link); a receiver that goes away fails it sooner. */
const COPY_TIMEOUT_MS = 24 * 60 * 60_000
/** Publishing hashes the whole file and writes its blocks once (cached after). */
const PUBLISH_TIMEOUT_MS = 60 * 60_000
const SHARE_TIMEOUT_MS = 30_000
/**
 * A holder admits a receiver and keeps the blocks for 30 minutes after a share order
 * (SHARE_TTL_MS on the processor): while a copy runs the gateway renews the order this often,
 * so a copy that takes longer than that is not cut off midway.
 */
export const SHARE_RENEW_MS = 5 * 60_000
/** How long to wait for a new model to show in a processor's status (its listing is cached 2 s). */
const REFRESH_MS = 3_000
const REFRESH_STEP_MS = 200

/** What a mesh copy reports on top of a pull's result. */
export interface CopyResult extends PullResult {
  /** Bytes that crossed the wire to the receiver (less than `size` when it resumed). */
  wireBytes: number
  /** The holder it was copied from. */
  from: string
}

/** Which processors a pull goes to, and what the gateway says about the choice. */
export interface PullPlan {
  targets: ProcessorEntry[]
  note?: string
}

/** Whether `e` serves and takes model copies: a llama.cpp processor with a store (it advertises a models key). */
export function sharesModels(e: ProcessorEntry): boolean {
  return e.backend === 'llamacpp' && e.modelsKey !== undefined
}

/** Live llama.cpp processors that list `model` and can serve copies of it. */
export function holdersOf(router: RouterFacility, model: string): ProcessorEntry[] {
  return router.live().filter((e) => sharesModels(e) && serves(e, model))
}

/** Live, not draining llama.cpp processors that do not list `model` and can take a copy; least busy first. */
function receiversOf(router: RouterFacility, model: string): ProcessorEntry[] {
  return router
    .live()
    .filter((e) => e.state === 'serving' && sharesModels(e) && !serves(e, model))
    .sort((a, b) => a.active / a.capacity - b.active / b.capacity)
}

/**
 * The processors a pull without a `source` goes to: with `replicas`, enough llama.cpp receivers
 * to reach that many holders; with 'all', every live Ollama processor and, when some llama.cpp
 * processor holds the model, every llama.cpp one that does not; or the `to` list as given.
 * @throws ERR_NOT_FOUND (nobody to copy from, or nobody able to take it), ERR_BAD_REQUEST
 */
export function planMeshPull(router: RouterFacility, req: GatewayPullRequest): PullPlan {
  const model = req.model
  if (req.replicas !== undefined) {
    const holders = holdersOf(router, model)
    const need = req.replicas - holders.length
    if (need <= 0) return { targets: [], note: `already on ${holders.length} processor(s)` }
    if (holders.length === 0)
      throw new MeshError('ERR_NOT_FOUND', `no live llama.cpp processor holds '${model}' to copy it from`)
    const targets = receiversOf(router, model).slice(0, need)
    if (targets.length === 0)
      throw new MeshError('ERR_NOT_FOUND', `no live llama.cpp processor can take a copy of '${model}'`)
    const reach = holders.length + targets.length
    return reach < req.replicas
      ? {
          targets,
          note: `only ${targets.length} processor(s) could take a copy: ${reach} of ${req.replicas}`,
        }
      : { targets }
  }
  if (req.to !== 'all') return { targets: namedTargets(router, req.to) }
  const ollama = router.live().filter((e) => e.backend === 'ollama')
  const copies = holdersOf(router, model).length > 0 ? receiversOf(router, model) : []
  const targets = [...ollama, ...copies]
  if (targets.length === 0)
    throw new MeshError('ERR_NOT_FOUND', `no live processor to pull '${model}' onto or copy it to`, {
      backend: 'ollama',
    })
  return { targets }
}

/** The processors a pull's `to` names (keys or their prefixes), each once. @throws ERR_BAD_REQUEST, ERR_NOT_FOUND */
export function namedTargets(router: RouterFacility, to: readonly string[]): ProcessorEntry[] {
  const entries = to.map((k) => router.find(k))
  return [...new Map(entries.map((e) => [e.id, e])).values()]
}

/**
 * Beats `entry` until its status lists `model` (at most REFRESH_MS): a processor's model
 * listing is cached briefly, and a beat already under way may predate the new file.
 */
export async function refreshUntilListed(
  router: RouterFacility,
  entry: ProcessorEntry,
  model: string,
): Promise<void> {
  const deadline = Date.now() + REFRESH_MS
  while (true) {
    await router.beatNow(entry).catch(() => {})
    if (serves(entry, model) || Date.now() >= deadline) return
    await new Promise((resolve) => setTimeout(resolve, REFRESH_STEP_MS))
  }
}

/** The copies of one pull: each holder publishes the file once, however many receivers fetch it. */
export class MeshCopy {
  private readonly manifests = new Map<string, Promise<ModelManifest>>()
  private next = 0

  constructor(
    private readonly gateway: PullingGateway,
    private readonly req: GatewayPullRequest,
    private readonly cancel: CancelToken,
    /** Copies under way at this gateway, by `model@processor` (its GatewayModelPull's). */
    private readonly underWay: Map<string, Promise<PullOutcome>>,
  ) {}

  /**
   * Copies the model onto `entry` from a holder; the outcome, never a throw. A copy of the same
   * model onto the same processor already under way at this gateway (the reconcile loop,
   * placement and an admin's pull may order one at once) is joined, not started twice.
   */
  copyTo(entry: ProcessorEntry, onProgress: (p: TaggedProgress) => void): Promise<PullOutcome> {
    const key = `${baseModel(this.req.model)}@${entry.id}`
    const running = this.underWay.get(key)
    if (running) return running.then((outcome) => this.joined(entry, outcome, onProgress))
    const copy = this.copyOnce(entry, onProgress).finally(() => this.underWay.delete(key))
    this.underWay.set(key, copy)
    return copy
  }

  /**
   * A joined copy's outcome, held to what this order asked: the copy it joined was ordered
   * without this order's digest and under another caller's cancel. Cancelled by that caller,
   * it is ordered again; done, the copy must have this order's digest (else ERR_CONFLICT).
   */
  private async joined(
    entry: ProcessorEntry,
    outcome: PullOutcome,
    onProgress: (p: TaggedProgress) => void,
  ): Promise<PullOutcome> {
    if (!outcome.ok)
      return outcome.error.code === 'ERR_CANCELLED' && !this.cancel.aborted
        ? this.copyTo(entry, onProgress)
        : outcome
    try {
      await this.sameDigest(entry)
      return outcome
    } catch (err) {
      return failedOn(entry.id, err)
    }
  }

  private async copyOnce(
    entry: ProcessorEntry,
    onProgress: (p: TaggedProgress) => void,
  ): Promise<PullOutcome> {
    const processor = entry.id
    try {
      if (entry.state === 'unreachable')
        throw new MeshError('ERR_UNAVAILABLE', 'the processor is unreachable')
      // Named (a `to` list, a reconciler) but there already: nothing to move.
      if (serves(entry, this.req.model)) {
        await this.sameDigest(entry)
        return { processor, ok: true, model: baseModel(this.req.model), wireBytes: 0 }
      }
      if (!entry.modelsKey)
        throw MeshError.unsupported('a model copy', 'needs a llama.cpp processor with a store (no modelsKey)')
      const result = await this.fetchFromHolder(entry, onProgress)
      await refreshUntilListed(this.gateway.router, entry, result.model)
      return { processor, ok: true, ...result }
    } catch (err) {
      return failedOn(processor, err)
    }
  }

  /** With a digest asked for: the copy `entry` already lists must have it. @throws ERR_CONFLICT */
  private async sameDigest(entry: ProcessorEntry): Promise<void> {
    const want = this.req.digest?.replace(/^sha256:/, '')
    if (want === undefined) return
    const { models } = await this.gateway.net
      .peer(entry.publicKey)
      .request<{ models: { name: string; digest?: string }[] }>('models', {}, { timeout: SHARE_TIMEOUT_MS })
    const held = models.find((m) => baseModel(m.name) === baseModel(this.req.model))
    if (held?.digest?.replace(/^sha256:/, '') !== want)
      throw new MeshError(
        'ERR_CONFLICT',
        `it holds '${this.req.model}' with another digest (${held?.digest})`,
        {
          model: this.req.model,
          digest: held?.digest ?? null,
        },
      )
  }

  /** Tries the holders in turn (spread over receivers) until one's copy goes through or fails on the receiver. */
  private async fetchFromHolder(
    entry: ProcessorEntry,
    onProgress: (p: TaggedProgress) => void,
  ): Promise<CopyResult> {
    const holders = holdersOf(this.gateway.router, this.req.model).filter((h) => h.id !== entry.id)
    if (holders.length === 0)
      throw new MeshError(
        'ERR_NOT_FOUND',
        `no live llama.cpp processor holds '${this.req.model}' to copy it from`,
      )
    const start = this.next++
    let lastErr: unknown = null
    for (let i = 0; i < holders.length; i++) {
      const holder = holders[(start + i) % holders.length] as ProcessorEntry
      let manifest: ModelManifest
      try {
        // Publishing reads the whole file once (then it is cached): say what the wait is.
        onProgress({ status: `publishing on ${holder.id.slice(0, 12)}`, processor: entry.id })
        manifest = await this.publishOn(holder)
        const want = this.req.digest?.replace(/^sha256:/, '')
        if (want !== undefined && manifest.sha256 !== want)
          throw new MeshError('ERR_DIGEST_MISMATCH', `the holder's file has sha256 ${manifest.sha256}`)
        await this.share(holder, manifest, entry)
      } catch (err) {
        // The holder failed, or holds other bytes under that name: another may do.
        lastErr = err
        continue
      }
      return this.fetchOn(entry, holder, manifest, onProgress)
    }
    throw MeshError.from(lastErr)
  }

  /** Asks `holder` to admit `entry`'s models key to `manifest`'s core (and keep its blocks). */
  private async share(holder: ProcessorEntry, manifest: ModelManifest, entry: ProcessorEntry): Promise<void> {
    await this.gateway.net
      .peer(holder.publicKey)
      .request('modelShare', { key: manifest.key, peers: [entry.modelsKey] }, { timeout: SHARE_TIMEOUT_MS })
  }

  private publishOn(holder: ProcessorEntry): Promise<ModelManifest> {
    let p = this.manifests.get(holder.id)
    if (!p) {
      p = this.gateway.net
        .peer(holder.publicKey)
        .request<ModelManifest>(
          'modelPublish',
          { model: baseModel(this.req.model) },
          { timeout: PUBLISH_TIMEOUT_MS },
        )
      this.manifests.set(holder.id, p)
      p.catch(() => this.manifests.delete(holder.id))
    }
    return p
  }

  private async fetchOn(
    entry: ProcessorEntry,
    holder: ProcessorEntry,
    manifest: ModelManifest,
    onProgress: (p: TaggedProgress) => void,
  ): Promise<CopyResult> {
    const payload: Record<string, unknown> = { manifest, from: [holder.modelsKey] }
    if (this.req.digest !== undefined) payload.digest = this.req.digest
    const processor = entry.id
    const renew = setInterval(() => {
      this.share(holder, manifest, entry).catch((err: unknown) =>
        this.gateway.log.warn({ model: manifest.name, holder: holder.id, err }, 'renewing a share failed'),
      )
    }, SHARE_RENEW_MS)
    renew.unref()
    try {
      const result = await this.gateway.net
        .peer(entry.publicKey)
        .stream<Omit<CopyResult, 'from'>>('modelFetch', payload, {
          cancel: this.cancel,
          timeout: COPY_TIMEOUT_MS,
          onChunk: (chunk: StreamChunk) => {
            const progress = (chunk as StreamChunk & { progress?: PullProgress }).progress
            if (progress && typeof progress.status === 'string') onProgress({ ...progress, processor })
          },
        })
      return { ...result, from: holder.id }
    } finally {
      clearInterval(renew)
    }
  }
}
