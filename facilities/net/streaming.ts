/**
 * The stream protocol (see docs/architecture.md): a callee pushes `chunk` events
 * `{ id, seq, text }` before its reply, a caller may send a `cancel` event `{ id }`.
 * Here: its event names, the chunk, and the sending side's ChunkWriter; the receiving
 * side is `PeerConnection.stream`.
 */

export const STREAM_CHUNK = 'chunk'
export const STREAM_CANCEL = 'cancel'

export interface StreamChunk {
  id: string
  seq: number
  text: string
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
    if (this.timer) return
    const wait = this.lastSent + this.windowMs - performance.now()
    if (this.windowMs <= 0 || this.seq === 0 || wait <= 0) this.flush()
    else this.timer = setTimeout(() => this.flush(), wait)
  }

  flush(): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
    if (this.pending === '') return
    const text = this.pending
    this.pending = ''
    this.lastSent = performance.now()
    this.send({ id: this.id, seq: this.seq++, text })
  }
}
