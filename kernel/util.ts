/** Small helpers every layer uses; each exists once, here. */
import { randomBytes } from 'node:crypto'

/** A JSON object: not null, not an array. */
/** 32 bytes as lowercase hex: a public key, a seed, a proof. */
export const HEX32 = /^[0-9a-f]{64}$/

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** The object a JSON text holds, or undefined when the text is not JSON or not an object. */
export function jsonObjectOf(text: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(text)
    return isRecord(value) ? value : undefined
  } catch {
    return undefined
  }
}

/** The message of anything thrown. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/**
 * Ids unique to this process and unlikely to repeat across processes: a random prefix of
 * `prefixBytes` bytes and a counter. A counter, not a random id per call, so that an id says
 * which came first.
 */
export function idSequence(prefixBytes: number, pad = 0): () => string {
  const prefix = randomBytes(prefixBytes).toString('hex')
  let next = 0
  return () => prefix + (next++).toString(36).padStart(pad, '0')
}

/**
 * An id for a tool call that came without one, in OpenAI's form (`call_` and 24 hex digits:
 * only letters and digits, as OpenAI's are): made by whoever first sees the call, so every
 * later layer passes the same id on. The one form of id the mesh makes.
 */
export function newHexToolCallId(): string {
  return `call_${randomBytes(12).toString('hex')}`
}

/** Smoothing of measured speeds (tokens/s, time to first token, answer length). */
export const EWMA_ALPHA = 0.3

/** An exponentially weighted moving average; the first sample (prev null) is taken as it is. */
export function ewma(prev: number | null, sample: number): number {
  return prev === null ? sample : EWMA_ALPHA * sample + (1 - EWMA_ALPHA) * prev
}

/** A seeded PRNG (mulberry32): tiny, the same sequence for the same seed everywhere. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
