/**
 * Pulling a model onto processors, by an admin through a gateway: RPC `modelPull
 * { model, source?, digest?, to }` (streamed) and, for HTTP, Ollama's `/api/pull`
 * (GatewaySource.pullModel). The gateway asks each chosen processor (`modelPull` on the
 * processor, workers/processor/model-pull.ts) at once, passes their progress on tagged with
 * the processor's id, and answers with one outcome per processor: pulled (with its digest
 * and size) or the error it failed with. Then it beats each processor out of turn, so the
 * new model is routable at once.
 *
 * `to` is a list of processor keys (or 8+ hex digit prefixes), or 'all': every live
 * processor whose backend can pull that kind of model, llama.cpp when a `source` is given
 * (a URL or `hf:` reference); without one, Ollama processors pull from Ollama's registry and
 * llama.cpp ones copy the model from a processor of the mesh that holds it (model-copy.ts).
 * `replicas: N` instead of `to` (no `source`): copies onto enough llama.cpp processors that
 * N hold it.
 */
import type { Identity } from '../../facilities/auth/identity.js'
import type { PullProgress, PullResult } from '../../facilities/backends/types.js'
import type { Logger } from '../../facilities/log.facility.js'
import type { NetFacility } from '../../facilities/net/net.facility.js'
import type { CallContext, MethodTable } from '../../facilities/net/rpc-server.js'
import { STREAM_CHUNK, type StreamChunk } from '../../facilities/net/streaming.js'
import type { ProcessorEntry } from '../../facilities/router/processor-entry.js'
import type { RouterFacility } from '../../facilities/router/router.facility.js'
import { CancelToken } from '../../kernel/cancel.js'
import { MeshError } from '../../kernel/errors.js'
import { MeshCopy, namedTargets, planMeshPull, refreshUntilListed } from './model-copy.js'
import { errorOf, type FailedOn, failedOn } from './model-outcome.js'

/** A pull may take hours (a large model over a slow link); a processor that goes away fails it sooner. */
const PULL_TIMEOUT_MS = 24 * 60 * 60_000
/** Most processors one pull names, or copies onto (`replicas`). */
export const MAX_TARGETS = 256

export interface GatewayPullRequest {
  model: string
  source?: string
  digest?: string
  /** Ignored when `replicas` is set. */
  to: string[] | 'all'
  /** Copy from the mesh onto enough llama.cpp processors that this many hold the model (no `source`). */
  replicas?: number
}

/** A processor's progress, tagged with the processor's id. */
export interface TaggedProgress extends PullProgress {
  processor: string
}

export type PullOutcome =
  | ({ processor: string; ok: true } & PullResult & { wireBytes?: number; from?: string })
  | FailedOn

/**
 * Copies `model` onto one processor from a holder of the mesh (the reconcile loop's and
 * placement's copies). @throws that processor's error, as a MeshError
 */
export async function copyOnto(
  pull: Pick<GatewayModelPull, 'run'>,
  processor: string,
  model: string,
  cancel: CancelToken,
): Promise<void> {
  const { results } = await pull.run(null, { model, to: [processor] }, () => {}, cancel)
  const result = results[0]
  if (!result) throw new MeshError('ERR_INTERNAL', 'the pull gave no outcome')
  if (!result.ok) throw errorOf(result.error)
}

export interface PullSummary {
  model: string
  results: PullOutcome[]
  /** What the gateway could not do as asked (fewer replicas than asked) or had no need to. */
  note?: string
}

/** What of the gateway a pull uses. */
export interface PullingGateway {
  readonly router: RouterFacility
  readonly net: NetFacility
  readonly log: Logger
}

function optionalString(p: Record<string, unknown>, field: string): string | undefined {
  const v = p[field]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'string' || v === '') throw MeshError.badRequest(`request.${field}: expected a string`)
  return v
}

/** @throws ERR_BAD_REQUEST */
export function parseGatewayPull(payload: unknown): GatewayPullRequest {
  const p = (payload ?? {}) as Record<string, unknown>
  if (typeof p.model !== 'string' || p.model === '') throw MeshError.badRequest('request.model: required')
  if (p.replicas !== undefined && p.replicas !== null) return parseReplicas(p, p.model)
  const to = p.to ?? 'all'
  if (
    to !== 'all' &&
    (!Array.isArray(to) ||
      to.length === 0 ||
      to.length > MAX_TARGETS ||
      !to.every((k) => typeof k === 'string' && k !== ''))
  ) {
    throw MeshError.badRequest("request.to: 'all' or a list of processor keys")
  }
  const req: GatewayPullRequest = { model: p.model, to: to as string[] | 'all' }
  const source = optionalString(p, 'source')
  const digest = optionalString(p, 'digest')
  if (source !== undefined) req.source = source
  if (digest !== undefined) req.digest = digest
  return req
}

/** @throws ERR_BAD_REQUEST */
function parseReplicas(p: Record<string, unknown>, model: string): GatewayPullRequest {
  const n = p.replicas
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > MAX_TARGETS)
    throw MeshError.badRequest(`request.replicas: an integer from 1 to ${MAX_TARGETS}`)
  if (p.to !== undefined && p.to !== null) throw MeshError.badRequest('request.replicas: not with request.to')
  if (p.source !== undefined && p.source !== null)
    throw MeshError.badRequest('request.replicas: copies from the mesh, not with request.source')
  const req: GatewayPullRequest = { model, to: 'all', replicas: n }
  const digest = optionalString(p, 'digest')
  if (digest !== undefined) req.digest = digest
  return req
}

/**
 * A gateway that orders copies: its one GatewayModelPull (`modelPull`) is what joins two orders
 * for the same copy (the reconcile loop, placement, an admin's pull).
 */
export interface ModelPullingGateway extends PullingGateway {
  readonly modelPull: Pick<GatewayModelPull, 'run'>
}

export class GatewayModelPull {
  /** Copies under way, by `model@processor`: an order for one of them joins it. */
  private readonly underWay = new Map<string, Promise<PullOutcome>>()

  constructor(
    private readonly gateway: PullingGateway,
    /** Cancellable work by `callerKey/id`: the gateway's `cancel` method stops a pull found here. */
    private readonly running: Map<string, CancelToken>,
  ) {}

  /** RPC `modelPull`, admins only; `requireAdmin` checks the payload's credential. */
  methods(requireAdmin: (payload: unknown) => Identity): MethodTable {
    return { modelPull: (payload, ctx) => this.rpc(requireAdmin(payload), payload, ctx) }
  }

  private async rpc(actor: Identity, payload: unknown, ctx: CallContext): Promise<PullSummary> {
    const id = (payload as { id?: unknown } | null)?.id
    if (typeof id !== 'string' || id === '') throw MeshError.badRequest('request.id: a stream id')
    const req = parseGatewayPull(payload)
    const key = `${ctx.remotePublicKey.toString('hex')}/${id}`
    if (this.running.has(key)) throw MeshError.badRequest(`request.id: stream '${id}' is already running`)
    const cancel = new CancelToken()
    this.running.set(key, cancel)
    const unwatch = ctx.onClose(() => cancel.abort())
    let seq = 0
    const onProgress = (p: TaggedProgress) =>
      ctx.emit(STREAM_CHUNK, { id, seq: seq++, text: '', progress: p })
    try {
      return await this.run(actor, req, onProgress, cancel)
    } finally {
      unwatch()
      this.running.delete(key)
    }
  }

  /**
   * Pulls onto the chosen processors at once; without a `source`, llama.cpp ones copy the model
   * from a holder of the mesh. `run(null, { model, to: [key] }, …)` copies it onto that processor.
   * @throws ERR_BAD_REQUEST, ERR_NOT_FOUND (no such or no able processor, or nobody to copy from)
   */
  async run(
    actor: Identity | null,
    req: GatewayPullRequest,
    onProgress: (p: TaggedProgress) => void,
    cancel: CancelToken,
  ): Promise<PullSummary> {
    const { targets, note } =
      req.source === undefined ? planMeshPull(this.gateway.router, req) : { targets: this.targets(req) }
    const log = this.gateway.log
    log.info(
      { model: req.model, source: req.source, to: targets.map((e) => e.id), by: actor?.username, note },
      'pulling a model onto processors',
    )
    const copy = new MeshCopy(this.gateway, req, cancel, this.underWay)
    const results = await Promise.all(
      targets.map((entry) =>
        req.source === undefined && entry.backend !== 'ollama'
          ? copy.copyTo(entry, onProgress)
          : this.pullOn(entry, req, onProgress, cancel),
      ),
    )
    for (const r of results) {
      if (!r.ok) log.warn({ model: req.model, processor: r.processor, err: r.error.message }, 'pull failed')
    }
    return { model: req.model, results, ...(note ? { note } : {}) }
  }

  /** Where a pull from a `source` goes: the `to` list, or every live llama.cpp processor. */
  private targets(req: GatewayPullRequest): ProcessorEntry[] {
    const router = this.gateway.router
    if (req.to !== 'all') return namedTargets(router, req.to)
    const able = router.live().filter((e) => e.backend === 'llamacpp')
    if (able.length === 0) {
      throw new MeshError('ERR_NOT_FOUND', `no live llamacpp processor to pull '${req.model}' onto`, {
        backend: 'llamacpp',
      })
    }
    return able
  }

  private async pullOn(
    entry: ProcessorEntry,
    req: GatewayPullRequest,
    onProgress: (p: TaggedProgress) => void,
    cancel: CancelToken,
  ): Promise<PullOutcome> {
    const processor = entry.id
    const payload: Record<string, unknown> = { model: req.model }
    if (req.source !== undefined) payload.source = req.source
    if (req.digest !== undefined) payload.digest = req.digest
    try {
      if (entry.state === 'unreachable')
        throw new MeshError('ERR_UNAVAILABLE', 'the processor is unreachable')
      const result = await this.gateway.net.peer(entry.publicKey).stream<PullResult>('modelPull', payload, {
        cancel,
        timeout: PULL_TIMEOUT_MS,
        onChunk: (chunk: StreamChunk) => {
          const progress = (chunk as StreamChunk & { progress?: PullProgress }).progress
          if (progress && typeof progress.status === 'string') onProgress({ ...progress, processor })
        },
      })
      await refreshUntilListed(this.gateway.router, entry, result.model)
      return { processor, ok: true, ...result }
    } catch (err) {
      return failedOn(processor, err)
    }
  }
}

/**
 * Ollama's `/api/pull` on a gateway, for an admin (GatewaySource): the processors'
 * frames pass on tagged with `processor`, then `{status: "success"}` when every
 * processor pulled the model.
 * @throws the first failure's code (its message names the processor and how many failed)
 */
export async function pullForHttp(
  pull: Pick<GatewayModelPull, 'run'>,
  actor: Identity,
  req: { model: string; source?: string; digest?: string; to?: string[] | 'all'; replicas?: number },
  cb: { onProgress?: (p: PullProgress) => void; cancel?: CancelToken },
): Promise<PullSummary> {
  const parsed = parseGatewayPull(req)
  const onProgress = cb.onProgress ?? (() => {})
  const summary = await pull.run(actor, parsed, onProgress, cb.cancel ?? new CancelToken())
  const failed = summary.results.filter((r) => !r.ok)
  const first = failed[0]
  if (first && !first.ok) {
    const { code } = errorOf(first.error)
    throw new MeshError(
      code,
      `${failed.length} of ${summary.results.length} processor(s) failed; ${first.processor.slice(0, 16)}: ${first.error.message}`,
      { results: summary.results },
    )
  }
  // Fewer replicas than asked, or none needed: said in a frame of its own.
  if (summary.note) onProgress({ status: summary.note })
  onProgress({ status: 'success' })
  return summary
}
