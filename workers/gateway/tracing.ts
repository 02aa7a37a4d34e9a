import type { RequestTrace, Tracer } from '../../facilities/tracing/request-trace.js'
import { MeshError } from '../../kernel/errors.js'
import type { InferRequest, InferResult } from '../../kernel/inference.js'

/**
 * The gateway's side of request tracing (`tracing.enabled`): the request's id goes to the
 * processor with it, the answer carries the id and the per-hop timing, and the request's end is
 * logged with its id (at debug when it went well or the caller was refused, at warn when the
 * mesh failed it).
 */

/** Marks `req` as traced: the processor is sent its id and the caller's traceparent. */
export function startTrace(trace: RequestTrace, req: InferRequest): void {
  trace.started = true
  req.requestId = trace.id
  if (trace.traceparent !== undefined) req.traceparent = trace.traceparent
}

/** An embedding request (over RPC) with its id, the caller's or a new one, when tracing is on. */
export function traceEmbed<R extends { requestId?: string | undefined; traceparent?: string | undefined }>(
  tracer: Tracer | null,
  req: R,
): R {
  if (tracer) req.requestId = tracer.fromPayload(req).id
  return req
}

/** The id the usage ledger records the request under: the trace's when made here (unique), else its own. */
export function ledgerIdOf(trace: RequestTrace | undefined): string | undefined {
  return trace?.made ? trace.id : undefined
}

/** Failures that are the mesh's (not the caller's, not load shedding): logged at warn. */
function meshFailure(e: MeshError): boolean {
  return e.httpStatus >= 500 && e.code !== 'ERR_BUSY'
}

/**
 * Waits for `answer`, then gives it the request's id and timing and logs its end.
 * @throws what `answer` throws, once logged, with the request's id in its details (`requestId`)
 */
export async function endTrace(
  trace: RequestTrace,
  req: InferRequest,
  answer: Promise<InferResult>,
): Promise<InferResult> {
  let result: InferResult
  try {
    result = await answer
  } catch (err) {
    const timing = trace.finish()
    const e = MeshError.from(err)
    if (meshFailure(e)) {
      trace.log.warn({ err: e, model: req.model, timing }, 'request failed')
    } else if (trace.logs('debug')) {
      trace.log.debug({ code: e.code, model: req.model, timing }, 'request refused')
    }
    throw new MeshError(e.code, e.reason, { ...e.details, requestId: trace.id }, err)
  }
  const timing = trace.finish()
  if (trace.logs('debug')) {
    trace.log.debug(
      {
        model: req.model,
        processor: result.processor,
        ledgerId: result.requestId,
        tokens: result.completionTokens,
        timing,
      },
      'request done',
    )
  }
  result.requestId = trace.id
  result.timing = timing
  return result
}
