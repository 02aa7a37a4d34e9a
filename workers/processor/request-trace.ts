import type { Backend } from '../../facilities/backends/types.js'
import type { Logger } from '../../facilities/log.facility.js'
import { MeshError } from '../../kernel/errors.js'
import type { ProcessorReply } from '../../kernel/inference.js'
import { type ProcessorTiming, roundMs } from '../../kernel/trace.js'
import type { EmbedRequest, EmbedResult } from '../../kernel/wire.js'

/**
 * The processor's side of request tracing: a request that comes with a `requestId` (a gateway
 * with tracing on) has it in every log line about it (a pino child bound to `reqId`, made only
 * when a line is written), and its reply carries the processor's and the backend's time. A
 * request without one (an older gateway, tracing off) is served the same, untimed.
 */

/** The logger for lines about the request `requestId` (none: the worker's own). */
function loggerFor(log: Logger, requestId: string | undefined): Logger {
  return requestId === undefined ? log : log.child({ reqId: requestId })
}

/**
 * The timing of an answered request (from its arrival, and from the backend's start, to now),
 * logged at debug with the request's id.
 */
export function inferDone(
  log: Logger,
  requestId: string,
  traceparent: string | undefined,
  arrived: number,
  backendMs: number,
  reply: ProcessorReply,
): ProcessorTiming {
  const timing = { processorMs: roundMs(performance.now() - arrived), backendMs: roundMs(backendMs) }
  if (log.isLevelEnabled('debug')) {
    const { model, completionTokens: tokens, doneReason } = reply
    loggerFor(log, requestId).debug({ model, tokens, doneReason, timing, traceparent }, 'infer done')
  }
  return timing
}

/** A failed request, logged with its id: at warn, or at debug when it was cancelled or refused as bad. */
export function inferFailed(log: Logger, requestId: string | undefined, model: string, err: unknown): void {
  const e = MeshError.from(err)
  if (e.httpStatus < 500) {
    if (log.isLevelEnabled('debug')) loggerFor(log, requestId).debug({ code: e.code, model }, 'infer stopped')
    return
  }
  loggerFor(log, requestId).warn({ err: e, model }, 'infer failed')
}

/** An embedding request on the backend, logged with its id like `infer` (at debug; failures at warn). */
export async function tracedEmbed(
  log: Logger,
  backend: Backend,
  req: EmbedRequest & { requestId?: string | undefined },
): Promise<EmbedResult> {
  const { requestId } = req
  if (requestId === undefined) return backend.embed(req)
  const arrived = performance.now()
  try {
    const result = await backend.embed(req)
    if (log.isLevelEnabled('debug')) {
      loggerFor(log, requestId).debug(
        { model: req.model, inputs: req.input.length, ms: roundMs(performance.now() - arrived) },
        'embed done',
      )
    }
    return result
  } catch (err) {
    inferFailed(log, requestId, req.model, err)
    throw err
  }
}
