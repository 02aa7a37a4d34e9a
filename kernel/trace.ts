import { randomBytes } from 'node:crypto'
import { z } from 'zod'

/**
 * Request tracing on the wire: the request id made (or taken) at the edge and
 * carried to every worker a request touches, the W3C `traceparent` it may come
 * with, and the per-hop timing returned with the answer.
 */

/** Longest request id taken from a caller (`X-Request-Id`, or `requestId` over RPC). */
export const MAX_REQUEST_ID = 128

/** A request id a caller may give: printable ASCII (space to `~`), 1 to 128 characters. */
export const REQUEST_ID = /^[\x20-\x7e]{1,128}$/

/** W3C Trace Context `traceparent`: version-traceid-parentid-flags, lowercase hex. */
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/
const ZERO_TRACE = '0'.repeat(32)
const ZERO_PARENT = '0'.repeat(16)

/** The optional tracing fields of an `infer`/`embed` payload (gateway and processor alike). */
export const traceFields = {
  /** The request's id, made at the edge; a processor logs it with every line about the request. */
  requestId: z.string().regex(REQUEST_ID, 'printable ASCII, 1 to 128 characters').optional(),
  /** The caller's W3C traceparent, passed on as it came. */
  traceparent: z
    .string()
    .max(256)
    .refine((v) => traceIdOf(v) !== null, 'a W3C traceparent')
    .optional(),
}

/** `value` when it is a request id a caller may give, else null. */
export function validRequestId(value: unknown): string | null {
  return typeof value === 'string' && REQUEST_ID.test(value) ? value : null
}

/**
 * The trace id of a W3C `traceparent`, or null when it is not one: a version other than
 * `ff`, exactly four fields for version 00, a trace id and parent id that are not all zeros.
 */
export function traceIdOf(traceparent: unknown): string | null {
  if (typeof traceparent !== 'string' || traceparent.length > 256) return null
  const m = TRACEPARENT.exec(traceparent)
  if (!m) return null
  const [, version, traceId, parentId, , rest] = m as unknown as string[]
  if (version === 'ff' || (version === '00' && rest !== undefined)) return null
  if (traceId === ZERO_TRACE || parentId === ZERO_PARENT) return null
  return traceId as string
}

/**
 * Request ids made here: 32 lowercase hex digits (a valid W3C trace id), a random prefix per
 * process then a counter, so unique across restarts without a syscall per request.
 */
export function requestIdSequence(): () => string {
  const prefix = randomBytes(8).toString('hex')
  let next = 1
  return () => prefix + (next++).toString(16).padStart(16, '0')
}

/** What a processor measured of one request, returned in its `infer` reply when asked (a `requestId` came). */
export interface ProcessorTiming {
  /** From the request's arrival at the processor to its reply, ms. */
  processorMs: number
  /** The backend's part of that (the generation itself, model load included), ms. */
  backendMs: number
}

/**
 * One request's time, per hop, in ms. `totalMs` = `gatewayMs` + `queueMs` + `retryMs` +
 * `upstreamMs`; `upstreamMs` ≥ `processorMs` ≥ `backendMs` (each measured where it happens).
 */
export interface HopTiming {
  /** At the gateway, from arrival to the answer (usage record written). */
  totalMs: number
  /** The gateway's own part: authentication, limits, routing, the ledger. */
  gatewayMs: number
  /** Waiting for a free processor slot. */
  queueMs: number
  /** Attempts on processors that failed, and the backoff between them. */
  retryMs: number
  /** The answering processor's round trip as the gateway saw it (network and processor). */
  upstreamMs: number
  /** The processor's own time and its backend's, when the processor reports them. */
  processorMs?: number
  backendMs?: number
}

/** `ms` (≥ 0) with three decimals, as `toFixed(3)` writes it but in half the time (integer µs). */
function fixed3(ms: number): string {
  const us = Math.round(ms * 1000)
  const frac = us % 1000
  return `${(us - frac) / 1000}.${frac < 10 ? '00' : frac < 100 ? '0' : ''}${frac}`
}

/**
 * `X-LLM-Mesh-Timing` (and `Server-Timing`): `total;dur=18.204, gateway;dur=1.210,
 * queue;dur=0.300, retry;dur=0.000, upstream;dur=16.694, processor;dur=15.020,
 * backend;dur=14.100`, ms with three decimals; the processor's two parts only when it
 * reported them.
 */
export function formatTiming(t: HopTiming): string {
  const s = `total;dur=${fixed3(t.totalMs)}, gateway;dur=${fixed3(t.gatewayMs)}, queue;dur=${fixed3(t.queueMs)}, retry;dur=${fixed3(t.retryMs)}, upstream;dur=${fixed3(t.upstreamMs)}`
  if (t.processorMs === undefined) return s
  return `${s}, processor;dur=${fixed3(t.processorMs)}, backend;dur=${fixed3(t.backendMs ?? 0)}`
}

/** The parts of a timing header by name (ms); entries that are not `name;dur=<number>` are skipped. */
export function parseTiming(header: string): Record<string, number> {
  const parts: Record<string, number> = {}
  for (const entry of header.split(',')) {
    const m = /^\s*([A-Za-z0-9_-]+)\s*;\s*dur=([0-9.e+-]+)\s*$/.exec(entry)
    if (m) parts[m[1] as string] = Number(m[2])
  }
  return parts
}

/** A duration in ms, rounded to the microsecond. */
export function roundMs(ms: number): number {
  return Math.round(ms * 1000) / 1000
}
