import { baseModel } from '../../kernel/inference.js'
import type { BreakerState, ProcessorState, ProcessorView } from '../../kernel/wire.js'
import type { PeerConnection } from '../net/peer-connection.js'

/** What a processor reports in `status` (the fields the router reads). */
export interface ProcessorStatusReply {
  role?: string
  instance?: unknown
  draining?: unknown
  models?: unknown
  capacity?: unknown
  active?: unknown
  /** Of `active`, those not from this gateway. */
  activeOthers?: unknown
  queued?: unknown
  weight?: unknown
  backend?: { kind?: unknown; describe?: unknown }
  tokensPerSecond?: unknown
  /** Models loaded in memory now (absent: the processor does not say; routing treats all as loaded). */
  loaded?: unknown
  /** Measured cold-load time per model, ms. */
  loadMs?: unknown
  /** The status's version (kernel/status-beat.ts); absent from processors that predate it. */
  v?: unknown
  /** Proof of the mesh secret (the gateway's admission reads it). */
  meshProof?: unknown
  /** The key it serves model copies on (workers/processor/model-share.ts), hex. */
  modelsKey?: unknown
}

/** The gateway's record of one processor: what it reported, what was measured here, its breaker. */
export interface ProcessorEntry {
  publicKey: Buffer
  id: string
  state: ProcessorState
  /** The processor process's own id: the same key with a new one is a restarted processor. */
  instance: string
  /** When it became unreachable (0 while it answers). */
  unreachableSince: number
  /** Re-dials since then, and when the next may start. */
  redials: number
  nextDialAt: number
  /** When it was last reported as unreachable at info level. */
  reportedAt: number
  /** The connection whose close makes it unreachable. */
  watched: PeerConnection | null
  beating: boolean
  dialing: boolean
  models: Set<string>
  /** Models it has loaded (base names), or null when it does not report them (all count as loaded). */
  loaded: Set<string> | null
  /** Measured cold-load time per model (base name), ms. */
  loadMs: Map<string, number>
  capacity: number
  /** Generations the processor reports running (all gateways). */
  active: number
  /** Of those, the ones not from this gateway, as of its last report (routing's load). */
  activeElsewhere: number
  /** Requests waiting for a slot on the processor itself (all gateways). */
  queued: number
  /** Requests this gateway has running on it. */
  inflight: number
  weight: number
  backend: string
  /** Tokens/s the processor reports (its own EWMA). */
  reportedTokensPerSecond: number
  /** Measured here: EWMA of time to first token (ms) and of tokens/s while generating. */
  ttftMs: number | null
  tokensPerSecond: number | null
  served: number
  failures: number
  breaker: BreakerState
  /** Consecutive processor-side failures. */
  consecutiveFailures: number
  openedAt: number
  /** A half-open breaker lets one request through. */
  probing: boolean
  lastSeen: number
  missed: number
  /** The version of the status last applied ('' before one, or from a processor that gives none). */
  statusVersion: string
  /** Where it serves and takes model copies (hex), when it can (llama.cpp with a store). */
  modelsKey?: string
  /** When its next heartbeat is due while it runs nothing of this gateway's. */
  nextBeatAt: number
}

/** A serving processor's record before its first `status` is applied. */
export function newEntry(publicKey: Buffer): ProcessorEntry {
  return {
    publicKey,
    id: publicKey.toString('hex'),
    state: 'serving',
    instance: '',
    unreachableSince: 0,
    redials: 0,
    nextDialAt: 0,
    reportedAt: 0,
    watched: null,
    beating: false,
    dialing: false,
    models: new Set(),
    loaded: null,
    loadMs: new Map(),
    capacity: 1,
    active: 0,
    activeElsewhere: 0,
    queued: 0,
    inflight: 0,
    weight: 1,
    backend: '',
    reportedTokensPerSecond: 0,
    ttftMs: null,
    tokensPerSecond: null,
    served: 0,
    failures: 0,
    breaker: 'closed',
    consecutiveFailures: 0,
    openedAt: 0,
    probing: false,
    lastSeen: Date.now(),
    missed: 0,
    statusVersion: '',
    nextBeatAt: 0,
  }
}

function asNumber(v: unknown, fallback: number): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : fallback
}

/** Whether `e` serves `model`, `:latest` or not (Ollama lists names with it, llama.cpp without). */
export function serves(e: ProcessorEntry, model: string): boolean {
  if (e.models.has(model)) return true
  const base = baseModel(model)
  return e.models.has(base) || e.models.has(`${base}:latest`)
}

/** Copies a status's loaded models and load times (null, empty: a processor that does not report them). */
function applyLoaded(entry: ProcessorEntry, status: ProcessorStatusReply): void {
  entry.loaded = Array.isArray(status.loaded)
    ? new Set(status.loaded.filter((m): m is string => typeof m === 'string').map(baseModel))
    : null
  entry.loadMs = new Map()
  if (status.loadMs !== null && typeof status.loadMs === 'object') {
    for (const [model, ms] of Object.entries(status.loadMs as Record<string, unknown>))
      if (typeof ms === 'number' && Number.isFinite(ms) && ms >= 0) entry.loadMs.set(baseModel(model), ms)
  }
}

/** Whether `model` is loaded on `e` (true when `e` does not report what it has loaded). */
export function isLoaded(e: ProcessorEntry, model: string): boolean {
  return e.loaded === null || e.loaded.has(baseModel(model))
}

/** Whether a `status` reply is a beat (load only: the caller's version is current) rather than a full status. */
export function isBeat(status: ProcessorStatusReply): boolean {
  return status.role === undefined && typeof status.v === 'string'
}

/** Copies a beat's load into `entry` (its description stays as the last full status gave it). */
export function applyBeat(entry: ProcessorEntry, beat: ProcessorStatusReply, now: number): void {
  entry.active = Math.max(0, asNumber(beat.active, entry.active))
  entry.activeElsewhere = Math.max(0, Math.min(entry.active, asNumber(beat.activeOthers, 0)))
  entry.queued = Math.max(0, asNumber(beat.queued, entry.queued))
  entry.reportedTokensPerSecond = asNumber(beat.tokensPerSecond, entry.reportedTokensPerSecond)
  entry.lastSeen = now
  entry.missed = 0
}

/**
 * Copies a `status` reply into `entry` (all but its instance and draining flag, which the
 * registry reads first: they change the processor's state); returns the models it serves.
 */
export function applyStatus(entry: ProcessorEntry, status: ProcessorStatusReply): string[] {
  const models = Array.isArray(status.models)
    ? status.models.filter((m): m is string => typeof m === 'string')
    : []
  entry.models = new Set(models)
  applyLoaded(entry, status)
  entry.capacity = Math.max(1, Math.floor(asNumber(status.capacity, 1)))
  entry.active = Math.max(0, asNumber(status.active, 0))
  // Taken as the processor counts it: our own count, subtracted here, would be one too many
  // for each of our requests that ended while the report travelled.
  entry.activeElsewhere = Math.max(0, Math.min(entry.active, asNumber(status.activeOthers, 0)))
  entry.queued = Math.max(0, asNumber(status.queued, 0))
  entry.weight = Math.max(0, asNumber(status.weight, 1))
  entry.reportedTokensPerSecond = asNumber(status.tokensPerSecond, 0)
  entry.backend = typeof status.backend?.kind === 'string' ? status.backend.kind : ''
  entry.statusVersion = typeof status.v === 'string' ? status.v : ''
  if (typeof status.modelsKey === 'string' && /^[0-9a-f]{64}$/.test(status.modelsKey))
    entry.modelsKey = status.modelsKey
  else delete entry.modelsKey
  entry.lastSeen = Date.now()
  entry.missed = 0
  return models
}

/** What `status` and `llm-mesh status` show of a processor. */
export function viewOf(e: ProcessorEntry, now: number): ProcessorView {
  return {
    publicKey: e.id,
    state: e.state,
    models: [...e.models].sort(),
    ...(e.loaded ? { loaded: [...e.loaded].sort() } : {}),
    capacity: e.capacity,
    active: e.active,
    queued: e.queued,
    inflight: e.inflight,
    weight: e.weight,
    backend: e.backend,
    tokensPerSecond: e.reportedTokensPerSecond,
    ttftMs: e.ttftMs === null ? null : Math.round(e.ttftMs * 100) / 100,
    measuredTokensPerSecond: e.tokensPerSecond === null ? null : Math.round(e.tokensPerSecond * 10) / 10,
    served: e.served,
    failures: e.failures,
    breaker: e.breaker,
    lastSeenMs: now - e.lastSeen,
    relayed: e.watched?.relayed === true,
  }
}

/**
 * An idle processor's next beat after `now`: at the phase of the period its key picks (the
 * same phase whenever it was last beaten, and however the period changed since), so idle beats
 * stay spread over the period instead of bunching where the registry grew past the budget.
 */
export function idleBeatAfter(entry: ProcessorEntry, now: number, every: number): number {
  const phase = (entry.publicKey.readUInt32BE(0) / 2 ** 32) * every
  return Math.floor((now - phase) / every) * every + phase + every
}
