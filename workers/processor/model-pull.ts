/**
 * A processor's `modelPull` RPC (gateways only, as every method: the firewall):
 * its backend fetches a model (llama.cpp: from a URL or `hf:` reference, resumably and
 * verified; Ollama: Ollama's own pull). A streamed call: progress goes out as stream chunks
 * of the usual protocol, `{ id, seq, text: '', progress: { status, digest?, total?,
 * completed? } }` (a chunk with no text and one extra field, so the stream machinery needs
 * no change), before the reply `{ model, digest?, size? }`. A `cancel` event for its id, or
 * the caller going away, stops it; a llama.cpp download keeps its partial file and resumes
 * on the next pull of the same source.
 */

import type { Backend } from '../../facilities/backends/types.js'
import { canPull, type PullProgress, type PullRequest } from '../../facilities/backends/types.js'
import type { Logger } from '../../facilities/log.facility.js'
import type { CallContext, Handler, MethodTable } from '../../facilities/net/rpc-server.js'
import { STREAM_CHUNK } from '../../facilities/net/streaming.js'
import { CancelToken } from '../../kernel/cancel.js'
import { MeshError } from '../../kernel/errors.js'

/** Byte progress goes out at most this often; a new status always goes at once. */
const PROGRESS_INTERVAL_MS = 100
const MAX_ID_LENGTH = 128

/** What of the processor a pull uses. */
export interface PullingProcessor {
  readonly backend: Backend
  readonly log: Logger
}

/** @throws ERR_BAD_REQUEST */
function parsePull(payload: unknown): PullRequest & { id: string } {
  const p = (payload ?? {}) as Record<string, unknown>
  if (typeof p.id !== 'string' || p.id === '' || p.id.length > MAX_ID_LENGTH)
    throw MeshError.badRequest('request.id: a stream id')
  if (typeof p.model !== 'string' || p.model === '') throw MeshError.badRequest('request.model: required')
  const req: PullRequest & { id: string } = { id: p.id, model: p.model }
  for (const field of ['source', 'digest'] as const) {
    const v = p[field]
    if (v === undefined || v === null) continue
    if (typeof v !== 'string') throw MeshError.badRequest(`request.${field}: expected string`)
    req[field] = v
  }
  return req
}

/**
 * Sends progress as stream chunks of the call (a pull's or a copy's): a new status and the
 * last byte count at once, byte counts in between at most every PROGRESS_INTERVAL_MS.
 */
export function progressSender(ctx: CallContext, id: string): (p: PullProgress) => void {
  let seq = 0
  let lastStatus = ''
  let lastAt = 0
  return (p) => {
    const now = Date.now()
    const done = p.total !== undefined && p.completed === p.total
    if (p.status === lastStatus && !done && now - lastAt < PROGRESS_INTERVAL_MS) return
    lastStatus = p.status
    lastAt = now
    ctx.emit(STREAM_CHUNK, { id, seq: seq++, text: '', progress: p })
  }
}

export class ProcessorModelPull {
  /** Pulls in flight by `callerKey/id`, for `cancel`. */
  private readonly running = new Map<string, CancelToken>()

  /** `pulled`: a model was added, forget cached listings so the next `status` shows it. */
  constructor(
    private readonly processor: PullingProcessor,
    private readonly pulled: () => void,
  ) {}

  methods(): MethodTable {
    return { modelPull: (payload, ctx) => this.pull(payload, ctx) }
  }

  /** The `cancel` method: stops the caller's pull `payload.id`, or else calls `generations`. */
  orCancel(generations: Handler): Handler {
    return (payload, ctx) => this.cancel(payload, ctx.remotePublicKey) ?? generations(payload, ctx)
  }

  private cancel(payload: unknown, caller: Buffer): { cancelled: true } | undefined {
    const id = (payload as { id?: unknown } | null)?.id
    const token = typeof id === 'string' ? this.running.get(`${caller.toString('hex')}/${id}`) : undefined
    if (!token) return undefined
    token.abort()
    return { cancelled: true }
  }

  private async pull(payload: unknown, ctx: CallContext) {
    const { id, ...req } = parsePull(payload)
    const backend = this.processor.backend
    if (!canPull(backend))
      throw MeshError.unsupported('modelPull', `is not possible on a ${backend.kind} backend`)
    const key = `${ctx.remotePublicKey.toString('hex')}/${id}`
    if (this.running.has(key)) throw MeshError.badRequest(`request.id: pull '${id}' is already running`)
    const cancel = new CancelToken()
    this.running.set(key, cancel)
    const unwatch = ctx.onClose(() => cancel.abort())
    const log = this.processor.log
    log.info({ model: req.model, source: req.source }, 'pulling a model')
    try {
      const result = await backend.pullModel(req, { cancel, onProgress: progressSender(ctx, id) })
      this.pulled()
      log.info({ model: result.model, digest: result.digest, size: result.size }, 'model pulled')
      return result
    } catch (err) {
      log.warn({ model: req.model, err: MeshError.from(err).message }, 'model pull failed')
      throw err
    } finally {
      unwatch()
      this.running.delete(key)
    }
  }
}
