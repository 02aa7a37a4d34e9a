import type { NetFacility } from '../../facilities/net/net.facility.js'
import type { RouterFacility } from '../../facilities/router/router.facility.js'
import { type CancelToken, cancelError } from '../../kernel/cancel.js'
import type { GatewayConfig } from '../../kernel/config.js'
import { MeshError } from '../../kernel/errors.js'
import type { EmbedRequest } from '../../kernel/wire.js'
import type { EmbedReply } from './inference-pipeline.js'

/** Where the batch from `start` ends: at most `maxInputs` inputs and `maxBytes` bytes, but one input at least. */
export function batchEnd(
  input: readonly string[],
  start: number,
  maxInputs: number,
  maxBytes: number,
): number {
  let end = start
  let bytes = 0
  while (end < input.length && end - start < maxInputs) {
    bytes += Buffer.byteLength(input[end] as string)
    if (bytes > maxBytes && end > start) break
    end++
  }
  return end
}

/**
 * Embeddings of a long list of inputs in batches (`routing.embedBatchInputs`,
 * `embedBatchBytes`), one after another, each taking a slot through the router's
 * fair queue: another user's request runs between two batches instead of waiting
 * for the whole list. A batch that fails is retried on another processor.
 */
export class EmbedBatches {
  constructor(
    private readonly config: GatewayConfig,
    private readonly router: () => RouterFacility,
    private readonly net: () => NetFacility,
  ) {}

  /**
   * `req` batch by batch, the vectors joined in order and the prompt tokens summed; the
   * processor named is the first batch's. A list that fits one batch is sent as it is.
   * @throws ERR_INTERNAL when a processor answers a batch with a different number of vectors
   */
  async run(req: EmbedRequest, userId: string, cancel: CancelToken): Promise<EmbedReply> {
    const { embedBatchInputs, embedBatchBytes } = this.config.routing
    const { input } = req
    let end = batchEnd(input, 0, embedBatchInputs, embedBatchBytes)
    if (end >= input.length) return this.attempts(req, userId, cancel)
    const started = performance.now()
    const embeddings: number[][] = []
    let promptTokens = 0
    let loadMs = 0
    let processor: string | undefined
    for (let start = 0; start < input.length; ) {
      const batch = input.slice(start, end)
      const r = await this.attempts({ ...req, input: batch }, userId, cancel)
      if (r.embeddings.length !== batch.length) {
        throw new MeshError(
          'ERR_INTERNAL',
          `processor ${r.processor?.slice(0, 8)} answered ${batch.length} inputs with ${r.embeddings.length} vectors`,
        )
      }
      for (const v of r.embeddings) embeddings.push(v)
      promptTokens += r.promptTokens
      loadMs += r.loadMs
      processor ??= r.processor
      start = end
      end = batchEnd(input, start, embedBatchInputs, embedBatchBytes)
    }
    return { embeddings, promptTokens, totalMs: performance.now() - started, loadMs, processor }
  }

  /** One batch, on another processor when one fails (at most `routing.maxAttempts`). */
  private async attempts(req: EmbedRequest, userId: string, cancel: CancelToken): Promise<EmbedReply> {
    const tried = new Set<string>()
    for (let attempt = 1; ; attempt++) {
      const lease = await this.router().lease(req.model, { userId, exclude: tried, cancel })
      tried.add(lease.entry.id)
      try {
        if (cancel.aborted) throw cancelError(cancel.reason)
        const result = await this.net()
          .peer(lease.entry.publicKey, lease.entry.id)
          .request<EmbedReply>('embed', req, { timeout: this.config.inferenceTimeoutMs })
        lease.answered()
        return { ...result, processor: lease.entry.id }
      } catch (err) {
        const verdict = lease.failed(err)
        if (!verdict.retry || attempt >= this.config.routing.maxAttempts) throw verdict.error
      }
    }
  }
}
