import type { IncomingHttpHeaders } from 'node:http'
import {
  type HopTiming,
  type ProcessorTiming,
  requestIdSequence,
  roundMs,
  traceIdOf,
  validRequestId,
} from '../../kernel/trace.js'
import type { Logger } from '../log.facility.js'

/**
 * One request as a worker traces it: its id, the caller's traceparent, the logger of every line
 * about it (a pino child bound to `reqId`, made on first use, so a request that logs nothing
 * makes none), and the time it spent in each hop.
 */
export class RequestTrace {
  /** Waiting for a free processor slot (all attempts), ms. */
  queueMs = 0
  /** Failed attempts and the backoff between them, ms. */
  retryMs = 0
  /** The answering processor's round trip, ms (0 until one answered). */
  upstreamMs = 0
  /** What the answering processor reported of its time. */
  processor: ProcessorTiming | undefined = undefined
  /** Set when the request reached the mesh (an inference): only then is its timing reported. */
  started = false
  /** The timing, once the answer (or the failure) is known. */
  final: HopTiming | null = null
  private child: Logger | null = null

  constructor(
    /** The request's id, in every log line about it and returned to the caller. */
    readonly id: string,
    private readonly base: Logger,
    /** performance.now() when the request arrived. */
    readonly arrived: number,
    /** The caller's W3C traceparent, passed on as it came. */
    readonly traceparent: string | undefined,
    /** Whether this worker made the id (then unique: the usage ledger may use it as its own). */
    readonly made: boolean,
    /** Whether the timing goes out as `Server-Timing` too (`tracing.serverTiming`). */
    readonly serverTiming = false,
  ) {}

  /** The logger for lines about this request: `reqId` in every one. */
  get log(): Logger {
    if (this.child === null) this.child = this.base.child({ reqId: this.id })
    return this.child
  }

  /** Whether lines at `level` are written at all (asked of the worker's logger: no child is made). */
  logs(level: 'debug' | 'info'): boolean {
    return this.base.isLevelEnabled(level)
  }

  /** The request's timing now that it ended: its parts, each measured where it happens. */
  finish(): HopTiming {
    const totalMs = performance.now() - this.arrived
    const { queueMs, retryMs, upstreamMs, processor } = this
    const timing: HopTiming = {
      totalMs: roundMs(totalMs),
      gatewayMs: roundMs(Math.max(0, totalMs - queueMs - retryMs - upstreamMs)),
      queueMs: roundMs(queueMs),
      retryMs: roundMs(retryMs),
      upstreamMs: roundMs(upstreamMs),
    }
    if (processor) {
      timing.processorMs = processor.processorMs
      timing.backendMs = processor.backendMs
    }
    this.final = timing
    return timing
  }
}

/**
 * Makes the traces of one worker's requests, taking the caller's id when it gives a valid one:
 * over HTTP `X-Request-Id` (printable ASCII, at most 128 characters; else replaced) or the trace
 * id of a W3C `traceparent`; over RPC the payload's `requestId` (validated by its schema).
 */
export class Tracer {
  private readonly nextId = requestIdSequence()

  constructor(
    private readonly log: Logger,
    /** Send the timing as `Server-Timing` too. */
    private readonly serverTiming = false,
  ) {}

  /** A new id, made here. */
  newId(): string {
    return this.nextId()
  }

  /** The trace of an HTTP request, from its headers. */
  fromHeaders(headers: IncomingHttpHeaders, arrived: number): RequestTrace {
    const given = validRequestId(headers['x-request-id'])
    const parent = headers.traceparent
    const traceId = parent === undefined ? null : traceIdOf(parent)
    const traceparent = traceId === null ? undefined : (parent as string)
    const { log, serverTiming } = this
    if (given !== null) return new RequestTrace(given, log, arrived, traceparent, false, serverTiming)
    if (traceId !== null) return new RequestTrace(traceId, log, arrived, traceparent, false, serverTiming)
    return new RequestTrace(this.nextId(), log, arrived, undefined, true, serverTiming)
  }

  /** The trace of an RPC request, from its validated payload's `requestId` and `traceparent`. */
  fromPayload(req: { requestId?: string | undefined; traceparent?: string | undefined }): RequestTrace {
    const arrived = performance.now()
    if (req.requestId !== undefined) {
      return new RequestTrace(req.requestId, this.log, arrived, req.traceparent, false)
    }
    const traceId = req.traceparent === undefined ? null : traceIdOf(req.traceparent)
    if (traceId !== null) return new RequestTrace(traceId, this.log, arrived, req.traceparent, false)
    return new RequestTrace(this.nextId(), this.log, arrived, undefined, true)
  }
}
