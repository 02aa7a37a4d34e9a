import type { PeerConnection } from '../facilities/net.facility.js'
import type { ProcessorView } from '../facilities/router.facility.js'
import type { BaseStatus } from './base.worker.js'
import { BaseWorker, type WorkerOptions } from './base.worker.js'
import { type ClientConfig, type ConfigInput, clientConfigSchema, parseConfig } from './lib/config.js'
import { MeshError } from './lib/errors.js'
import type { InferRequestInput, InferResult } from './lib/inference.js'

export interface GatewayStatus extends BaseStatus {
  processors: ProcessorView[]
  active: number
}

import type { ChatRequest, GenerateRequest, ModelDetails, ModelInfo } from './lib/wire.js'

const GATEWAY_PING_TIMEOUT_MS = 3_000
const FIND_GATEWAY_TIMEOUT_MS = 15_000
const FIND_RETRY_MS = 250

/** One piece of a streamed answer; the last one has `done: true` and the final counts. */
export type StreamPart = { done: false; text: string } | { done: true; text: ''; result: InferResult }

/**
 * A streamed answer: iterate it for text pieces; `abort()` stops the
 * generation (on the processor too); `result` settles with the final counts.
 */
export class MeshStream implements AsyncIterable<StreamPart> {
  readonly result: Promise<InferResult>
  private readonly controller = new AbortController()
  private readonly queue: StreamPart[] = []
  private error: unknown = null
  private finished = false
  private wake: (() => void) | null = null

  constructor(start: (signal: AbortSignal, onText: (text: string) => void) => Promise<InferResult>) {
    this.result = start(this.controller.signal, (text) => this.push({ done: false, text }))
    this.result.then(
      (result) => {
        this.push({ done: true, text: '', result })
        this.finished = true
        this.notify()
      },
      (err) => {
        this.error = err
        this.finished = true
        this.notify()
      },
    )
  }

  abort(): void {
    this.controller.abort()
  }

  get aborted(): boolean {
    return this.controller.signal.aborted
  }

  private push(part: StreamPart): void {
    this.queue.push(part)
    this.notify()
  }

  private notify(): void {
    const wake = this.wake
    this.wake = null
    wake?.()
  }

  async *[Symbol.asyncIterator](): AsyncIterator<StreamPart> {
    while (true) {
      const part = this.queue.shift()
      if (part) {
        yield part
        if (part.done) return
        continue
      }
      if (this.finished) {
        if (this.error) throw this.error
        return
      }
      await new Promise<void>((resolve) => {
        this.wake = resolve
      })
    }
  }
}

export interface MeshClientOptions extends WorkerOptions {
  /** Config fields (bootstrap is required: a host:port list, or 'public'). */
  config?: ConfigInput
}

type Streamed<R> = R & { stream: true }
type NotStreamed<R> = R & { stream?: false }

/**
 * Joins the swarm as a client: finds a gateway, then chats, generates and
 * lists models over RPC. This is what `llm-mesh chat` and programs use:
 * `import { MeshClient } from 'llm-mesh'`.
 */
export class MeshClient extends BaseWorker<ClientConfig> {
  private gateway: PeerConnection | null = null
  private finding: Promise<PeerConnection> | null = null

  constructor(opts: MeshClientOptions = {}) {
    const config = parseConfig(clientConfigSchema, opts.config ?? {})
    super('client', config, opts)
  }

  protected override get serves(): boolean {
    return false
  }

  /** The gateway in use, found on the DHT (or the configured key) on first need. */
  async connectGateway(): Promise<PeerConnection> {
    if (this.gateway && !this.gateway.closed) return this.gateway
    this.finding ??= this.findGateway().finally(() => {
      this.finding = null
    })
    return this.finding
  }

  private async findGateway(): Promise<PeerConnection> {
    await this.ready()
    const deadline = Date.now() + FIND_GATEWAY_TIMEOUT_MS
    while (!this.closing) {
      const keys = this.config.gateway
        ? [Buffer.from(this.config.gateway, 'hex')]
        : await this.net.lookup('gateway')
      for (const key of keys) {
        const peer = this.net.peer(key)
        try {
          const pong = await peer.request<{ role?: string }>('ping', null, {
            timeout: GATEWAY_PING_TIMEOUT_MS,
          })
          if (pong?.role !== 'gateway') throw new MeshError('ERR_UNAVAILABLE', 'peer is not a gateway')
          this.gateway = peer
          peer.onClose(() => {
            if (this.gateway === peer) this.gateway = null
          })
          return peer
        } catch (err) {
          this.log.debug({ err, gateway: key.toString('hex') }, 'gateway did not answer')
          this.net.forget(key)
        }
      }
      if (Date.now() >= deadline) break
      await new Promise((resolve) => setTimeout(resolve, FIND_RETRY_MS))
    }
    throw new MeshError('ERR_UNAVAILABLE', `no gateway answered on mesh '${this.config.mesh}'`)
  }

  /** A plain request to the gateway. @throws the gateway's MeshError codes */
  async call<T>(method: string, payload: unknown = null, timeout?: number): Promise<T> {
    const gw = await this.connectGateway()
    return gw.request<T>(method, payload, timeout === undefined ? {} : { timeout })
  }

  /** Chat completion. With `stream: true` returns a MeshStream of text pieces. */
  chat(req: Streamed<ChatRequest>): MeshStream
  chat(req: NotStreamed<ChatRequest>): Promise<InferResult>
  chat(req: ChatRequest & { stream?: boolean }): MeshStream | Promise<InferResult> {
    const payload: InferRequestInput = { kind: 'chat', ...req, stream: req.stream === true }
    return req.stream ? this.stream(payload) : this.unary(payload)
  }

  /** Text completion. With `stream: true` returns a MeshStream of text pieces. */
  generate(req: Streamed<GenerateRequest>): MeshStream
  generate(req: NotStreamed<GenerateRequest>): Promise<InferResult>
  generate(req: GenerateRequest & { stream?: boolean }): MeshStream | Promise<InferResult> {
    const payload: InferRequestInput = { kind: 'generate', ...req, stream: req.stream === true }
    return req.stream ? this.stream(payload) : this.unary(payload)
  }

  private async unary(payload: InferRequestInput): Promise<InferResult> {
    return this.call<InferResult>('infer', payload, this.config.inferenceTimeoutMs)
  }

  private stream(payload: InferRequestInput): MeshStream {
    return new MeshStream(async (signal, onText) => {
      const gw = await this.connectGateway()
      return gw.stream<InferResult>('infer', payload as Record<string, unknown>, {
        signal,
        timeout: this.config.inferenceTimeoutMs,
        onChunk: (chunk) => onText(chunk.text),
      })
    })
  }

  async models(): Promise<ModelInfo[]> {
    return (await this.call<{ models: ModelInfo[] }>('models')).models
  }

  async show(model: string): Promise<ModelDetails> {
    return this.call<ModelDetails>('show', { model })
  }

  /** The gateway's status: its processors, their models and load. */
  async status(): Promise<GatewayStatus> {
    return this.call<GatewayStatus>('status')
  }
}

export { MeshClient as ClientWorker }
