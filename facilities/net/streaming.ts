/**
 * The stream protocol (see docs/architecture.md): a callee pushes `chunk` events
 * `{ id, seq, text }` before its reply, a caller may send a `cancel` event `{ id }`.
 * Here: its event names, the chunk, and the sending side's ChunkWriter; the receiving
 * side is `PeerConnection.stream`.
 */

import type { GenerationDelta } from '../../kernel/wire.js'

export const STREAM_CHUNK = 'chunk'
export const STREAM_CANCEL = 'cancel'

/** A piece of a stream: text, and with it reasoning, finished tool calls and log probabilities when asked for. */
export interface StreamChunk extends GenerationDelta {
  id: string
  seq: number
  text: string
}

/** The delta fields of a chunk, those set only. */
export function deltaOf(chunk: StreamChunk): GenerationDelta {
  const d: GenerationDelta = {}
  if (chunk.index !== undefined) d.index = chunk.index
  if (chunk.thinking !== undefined) d.thinking = chunk.thinking
  if (chunk.toolCalls !== undefined) d.toolCalls = chunk.toolCalls
  if (chunk.logprobs !== undefined) d.logprobs = chunk.logprobs
  return d
}

/**
 * A chunk's delta fields in the order they were generated, each part null when empty:
 * `before` its text (reasoning, and log probabilities, which go with the text) and `after`
 * it (finished tool calls, which end what the text says); both with the chunk's `index`.
 * A chunk's fields have no order among themselves: a receiver that passes them on one by
 * one must keep this one, or a call reaches its caller before the text that preceded it.
 */
export function deltaParts(chunk: StreamChunk): {
  before: GenerationDelta | null
  after: GenerationDelta | null
} {
  let before: GenerationDelta | null = null
  if (chunk.thinking !== undefined || chunk.logprobs !== undefined) {
    before = {}
    if (chunk.index !== undefined) before.index = chunk.index
    if (chunk.thinking !== undefined) before.thinking = chunk.thinking
    if (chunk.logprobs !== undefined) before.logprobs = chunk.logprobs
  }
  if (chunk.toolCalls === undefined) return { before, after: null }
  const after: GenerationDelta =
    chunk.index === undefined
      ? { toolCalls: chunk.toolCalls }
      : { index: chunk.index, toolCalls: chunk.toolCalls }
  return { before, after }
}

/**
 * The sending side of one stream: numbers chunks and coalesces text that comes
 * faster than `windowMs` apart into one chunk. The first piece goes at once
 * (time to first token is never delayed); later pieces wait at most `windowMs`.
 * At high token rates one event per token costs more than the tokens (encryption,
 * framing and a hop per message), and a person reading cannot tell a window this
 * short apart. `flush()` before the final reply keeps chunks ahead of it.
 */
export class ChunkWriter {
  private seq = 0
  private pending = ''
  /** Reasoning, tool calls and log probabilities waiting with `pending`. */
  private extra: GenerationDelta | null = null
  private lastSent = 0
  private timer: NodeJS.Timeout | null = null

  constructor(
    private readonly send: (chunk: StreamChunk) => void,
    private readonly id: string,
    private readonly windowMs: number,
  ) {}

  /** Chunks sent so far. */
  get sent(): number {
    return this.seq
  }

  write(text: string): void {
    if (text === '') return
    this.pending += text
    this.schedule()
  }

  /**
   * Adds reasoning or log probabilities to the stream, coalesced as text is; finished tool
   * calls go at once (nothing else is coming to join them), in a chunk of their own after
   * what was pending: a chunk's parts have no order among themselves, and text written
   * before a call must reach the caller before it. Reasoning after pending text sends the
   * text first, as a receiver puts a chunk's reasoning ahead of its text (`deltaParts`).
   */
  writeDelta(delta: GenerationDelta): void {
    if (delta.thinking && this.pending !== '') this.flush()
    this.extra ??= {}
    const extra = this.extra
    if (delta.thinking) extra.thinking = (extra.thinking ?? '') + delta.thinking
    if (delta.logprobs?.length) extra.logprobs = [...(extra.logprobs ?? []), ...delta.logprobs]
    if (!delta.toolCalls?.length) {
      this.schedule()
      return
    }
    if (this.pending !== '' || extra.thinking !== undefined || extra.logprobs !== undefined) this.flush()
    this.extra = { toolCalls: delta.toolCalls }
    this.flush()
  }

  private schedule(): void {
    if (this.timer) return
    const wait = this.lastSent + this.windowMs - performance.now()
    if (this.windowMs <= 0 || this.seq === 0 || wait <= 0) this.flush()
    else this.timer = setTimeout(() => this.flush(), wait)
  }

  flush(): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
    const extra = this.extra
    if (this.pending === '' && extra === null) return
    const text = this.pending
    this.pending = ''
    this.extra = null
    this.lastSent = performance.now()
    this.send(
      extra ? { id: this.id, seq: this.seq++, text, ...extra } : { id: this.id, seq: this.seq++, text },
    )
  }
}
