/**
 * The response keep-alive-fetch.ts hands the `ollama` client: a node:http
 * reply with as much of `Response` as that client (0.6) and jsonErrors use —
 * `ok`, `status`, `statusText`, `headers`, `json()`, `text()`, and `body`
 * read through `getReader()`. Not a real Response because, on Node 20, making
 * the body a ReadableStream (Readable.toWeb) plus the Response around it was
 * ~13% of a processor's CPU per request on the Ollama path
 * (LLM_MESH_BENCH_PROF=processor with bench/ollama-path.ts); the client reads
 * each body once, front to back, which a queue of chunks does for far less.
 *
 * The body is read off the socket as it arrives, so a reply the client stops
 * reading early (a stream after its done frame) still ends and frees its
 * keep-alive socket; past `MAX_QUEUED_CHUNKS` unread, reading pauses.
 */
import type { IncomingMessage } from 'node:http'

/** Unread chunks before the socket is paused. */
const MAX_QUEUED_CHUNKS = 64
/** Statuses whose body is always empty. */
const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304])

type ReadResult = { done: false; value: Uint8Array } | { done: true; value: undefined }

/** The chunks of one reply body, for one reader. */
class BodyQueue {
  private readonly chunks: Uint8Array[] = []
  private ended = false
  private failure: unknown = null
  private waiter: { resolve(r: ReadResult): void; reject(err: unknown): void } | null = null

  constructor(private readonly incoming: IncomingMessage) {
    incoming.on('data', (chunk: Buffer) => {
      if (this.waiter) this.settle()?.resolve({ done: false, value: chunk })
      else if (this.chunks.push(chunk) >= MAX_QUEUED_CHUNKS) incoming.pause()
    })
    incoming.once('end', () => {
      this.ended = true
      this.settle()?.resolve({ done: true, value: undefined })
    })
    incoming.once('error', (err) => this.fail(err))
    // A reply cut short without an error of its own (Node emits one for most cases).
    incoming.once('close', () => {
      if (!this.ended) this.fail(new Error('aborted'))
    })
  }

  read(): Promise<ReadResult> {
    // As with a web stream, an error drops what was queued: after an abort nothing more is read.
    if (this.failure !== null) return Promise.reject(this.failure)
    const chunk = this.chunks.shift()
    if (chunk !== undefined) {
      if (this.chunks.length === 0 && this.incoming.isPaused()) this.incoming.resume()
      return Promise.resolve({ done: false, value: chunk })
    }
    if (this.ended) return Promise.resolve({ done: true, value: undefined })
    if (this.waiter) return Promise.reject(new TypeError('body: one read at a time'))
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject }
    })
  }

  /** Stops reading: the reply is destroyed, its socket not reused. */
  cancel(): Promise<void> {
    this.incoming.destroy()
    return Promise.resolve()
  }

  private fail(err: unknown): void {
    if (this.failure !== null || this.ended) return
    this.failure = err
    this.settle()?.reject(err)
  }

  private settle() {
    const waiter = this.waiter
    this.waiter = null
    return waiter
  }
}

/** A body's reader, as the `ollama` client uses one. */
export interface BodyReader {
  read(): Promise<ReadResult>
  releaseLock(): void
  cancel(reason?: unknown): Promise<void>
}

/** The part of `Response` the `ollama` client and jsonErrors use. */
export interface FetchResponse {
  readonly ok: boolean
  readonly status: number
  readonly statusText: string
  readonly headers: Headers
  readonly body: { getReader(): BodyReader } | null
  json(): Promise<unknown>
  text(): Promise<string>
}

/** A node:http reply as a FetchResponse; its body is read from here on. */
export class IncomingResponse implements FetchResponse {
  readonly ok: boolean
  readonly status: number
  readonly statusText: string
  readonly body: { getReader(): BodyReader } | null
  private readonly incoming: IncomingMessage
  private headerList: Headers | null = null
  private queue: BodyQueue | null
  private locked = false

  constructor(incoming: IncomingMessage) {
    this.incoming = incoming
    this.status = incoming.statusCode ?? 0
    this.statusText = incoming.statusMessage ?? ''
    this.ok = this.status >= 200 && this.status <= 299
    if (NULL_BODY_STATUSES.has(this.status)) {
      incoming.resume()
      this.queue = null
      this.body = null
    } else {
      this.queue = new BodyQueue(incoming)
      this.body = { getReader: () => this.reader() }
    }
  }

  /** Made on first use: the client looks at headers only for error replies. */
  get headers(): Headers {
    if (this.headerList === null) {
      const raw = this.incoming.rawHeaders
      this.headerList = new Headers()
      for (let i = 0; i + 1 < raw.length; i += 2)
        this.headerList.append(raw[i] as string, raw[i + 1] as string)
    }
    return this.headerList
  }

  async text(): Promise<string> {
    if (this.body === null) return ''
    const reader = this.reader()
    const chunks: Uint8Array[] = []
    for (let r = await reader.read(); !r.done; r = await reader.read()) chunks.push(r.value)
    return Buffer.concat(chunks).toString('utf8')
  }

  async json(): Promise<unknown> {
    return JSON.parse(await this.text())
  }

  /** @throws TypeError when the body has already been taken */
  private reader(): BodyReader {
    const queue = this.queue
    if (queue === null || this.locked) throw new TypeError('body: already read')
    this.locked = true
    return {
      read: () => queue.read(),
      releaseLock: () => {},
      cancel: () => queue.cancel(),
    }
  }
}
