import { ftruncateSync, writeSync } from 'node:fs'
import { type FileHandle, mkdir, open, readdir, readFile, rm, truncate } from 'node:fs/promises'
import { join } from 'node:path'
import * as zlib from 'node:zlib'

/**
 * An append-only journal of JSON blocks in segment files, for the usage
 * ledger's write-ahead: `append()` resolves once the block is written to the
 * file (write(2), no fsync), which survives the process being killed (the
 * kernel has it); the ledger then indexes blocks into Hyperbee at its own pace
 * and calls `release()` to delete segments that are fully indexed.
 *
 * Frame: u32 LE payload length, u32 LE CRC-32 of the payload, payload (UTF-8
 * JSON `{ n, ...block }`). Reading stops at the first frame that is short or
 * fails its check (a write cut off by a crash) and the segment is cut back to
 * the last whole frame.
 *
 * Why not a Hypercore: an append there hashes and signs the tree and writes
 * RocksDB on the gateway's thread, for every group commit; a file write only
 * hands the bytes to the kernel (docs/benchmarks.md, the gateway bench).
 */

const HEADER = 8
const SEGMENT_BYTES = 8 * 1024 * 1024
const SEGMENT_RE = /^(\d{12})\.log$/

export interface JournalEntry<T> {
  /** Block number, from 0, across segments. */
  n: number
  block: T
}

/**
 * The check of each frame: CRC-32, zlib's (native since Node 20.15, which
 * `open()` insists on). CRC-32 is what write-ahead logs use to catch torn and
 * damaged frames, which is all this check is for: it guards against crashes,
 * not against someone who can write the file.
 */
function checksum(payload: Buffer): number {
  return zlib.crc32(payload)
}

function segmentName(first: number): string {
  return `${String(first).padStart(12, '0')}.log`
}

/** Whole frames of one segment file; `validBytes` is where the last whole frame ends. */
function parseSegment<T>(buf: Buffer): { entries: Array<JournalEntry<T>>; validBytes: number } {
  const entries: Array<JournalEntry<T>> = []
  let at = 0
  while (at + HEADER <= buf.length) {
    const len = buf.readUInt32LE(at)
    const sum = buf.readUInt32LE(at + 4)
    if (at + HEADER + len > buf.length) break
    const payload = buf.subarray(at + HEADER, at + HEADER + len)
    if (checksum(payload) !== sum) break
    let parsed: { n: number } & T
    try {
      parsed = JSON.parse(payload.toString('utf8'))
    } catch {
      break
    }
    const { n, ...block } = parsed
    if (!Number.isInteger(n)) break
    entries.push({ n, block: block as T })
    at += HEADER + len
  }
  return { entries, validBytes: at }
}

export class Journal<T extends object> {
  private readonly dir: string
  private readonly segmentLimit: number
  private handle: FileHandle | null = null
  /** First block number of each segment file, ascending. */
  private segments: number[] = []
  private segmentBytes = 0
  /** The next block's number. */
  length = 0

  /** `segmentBytes`: a new segment file starts once the current one is this big. */
  constructor(dir: string, opts: { segmentBytes?: number } = {}) {
    const { segmentBytes = SEGMENT_BYTES } = opts
    this.dir = dir
    this.segmentLimit = segmentBytes
  }

  /** Opens the folder; returns every whole block at or after `from`, in order (to replay). */
  async open(from: number): Promise<Array<JournalEntry<T>>> {
    if (typeof zlib.crc32 !== 'function') {
      throw new Error(`the usage journal needs Node 20.15 or later (zlib.crc32); this is ${process.version}`)
    }
    await mkdir(this.dir, { recursive: true })
    const names = (await readdir(this.dir)).filter((f) => SEGMENT_RE.test(f)).sort()
    this.segments = names.map((f) => Number((SEGMENT_RE.exec(f) as RegExpExecArray)[1]))
    const replay: Array<JournalEntry<T>> = []
    for (const [i, first] of this.segments.entries()) {
      const path = join(this.dir, segmentName(first))
      const buf = await readFile(path)
      const { entries, validBytes } = parseSegment<T>(buf)
      if (validBytes < buf.length) await truncate(path, validBytes)
      for (const e of entries) if (e.n >= from) replay.push(e)
      const last = entries[entries.length - 1]
      if (last) this.length = last.n + 1
      else if (i === this.segments.length - 1) this.length = Math.max(this.length, first)
      if (i === this.segments.length - 1) this.segmentBytes = validBytes
    }
    this.length = Math.max(this.length, from)
    if (this.segments.length === 0) await this.startSegment()
    else {
      const last = this.segments[this.segments.length - 1] as number
      this.handle = await open(join(this.dir, segmentName(last)), 'a')
    }
    return replay
  }

  private async startSegment(): Promise<void> {
    await this.handle?.close()
    this.segments.push(this.length)
    this.segmentBytes = 0
    this.handle = await open(join(this.dir, segmentName(this.length)), 'a')
  }

  /** Writes one block; resolves with its number once the write returned. */
  async append(block: T): Promise<number> {
    if (!this.handle) throw new Error('journal is closed')
    if (this.segmentBytes >= this.segmentLimit) await this.startSegment()
    const n = this.length
    // Encoded straight into the frame: one buffer, no copy.
    const json = JSON.stringify({ n, ...block })
    const length = Buffer.byteLength(json)
    const frame = Buffer.allocUnsafe(HEADER + length)
    frame.write(json, HEADER)
    frame.writeUInt32LE(length, 0)
    frame.writeUInt32LE(checksum(frame.subarray(HEADER)), 4)
    // A synchronous write: it only copies into the page cache, where an async one costs a trip
    // through libuv's thread pool and an event-loop turn on every group commit's path.
    const fd = (this.handle as FileHandle).fd
    try {
      // write(2) may take less than asked (a nearly full disk): the rest follows, or it throws.
      for (let at = 0; at < frame.length; ) at += writeSync(fd, frame, at, frame.length - at)
    } catch (err) {
      // Leave no torn frame behind for later ones to follow: cut back to the last whole frame.
      try {
        ftruncateSync(fd, this.segmentBytes)
      } catch {}
      throw err
    }
    this.length = n + 1
    this.segmentBytes += frame.length
    return n
  }

  /** Deletes segments whose blocks are all below `indexed` (never the one being written). */
  async release(indexed: number): Promise<void> {
    while (this.segments.length > 1 && (this.segments[1] as number) <= indexed) {
      const first = this.segments.shift() as number
      await rm(join(this.dir, segmentName(first)), { force: true })
    }
  }

  async close(): Promise<void> {
    await this.handle?.close()
    this.handle = null
  }
}
