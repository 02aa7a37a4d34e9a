/** Shared by the Ollama layer's tests: the tiny model behind the Ollama API, and request helpers. */
import { request } from 'node:http'
import { join } from 'node:path'
import type { Test } from 'brittle'
import {
  LlamaCppBackend,
  type LlamaCppBackendOptions,
} from '../../../facilities/backends/llamacpp/llamacpp.backend.js'
import { OllamaCompatServer } from '../../../facilities/http/ollama-api.js'
import { TINY_MODEL_NAME, writeTinyModel } from '../../../facilities/tiny-model/tiny-model.js'
import { MeshError } from '../../../kernel/errors.js'
import type { GenerateCallbacks, GenerationResult, InferenceSource } from '../../../kernel/wire.js'

export const STEP1_TEXT = 'defghijklmnopqrstuvwxyz'
export const GREEDY = { temperature: 0 }
export const MAX_BODY_BYTES = 64 * 1024
export const VERSION = '9.8.7'
const METRIC_FIELDS = [
  'total_duration',
  'load_duration',
  'prompt_eval_count',
  'prompt_eval_duration',
  'eval_count',
  'eval_duration',
] as const

export type Json = Record<string, unknown>

interface Setup {
  backend: LlamaCppBackend
  url: string
}

/** The tiny model in a fresh folder, a llama.cpp backend over it and the Ollama API in front, all closed on teardown. */
export async function setup(
  t: Test,
  opts: { backend?: Partial<LlamaCppBackendOptions>; source?: (b: LlamaCppBackend) => InferenceSource } = {},
): Promise<Setup> {
  const modelsDir = await t.tmp()
  await writeTinyModel(join(modelsDir, `${TINY_MODEL_NAME}.gguf`))
  const backend = new LlamaCppBackend({ modelsDir, threads: 1, ...opts.backend })
  t.teardown(() => backend.close(), { order: 2 })
  await backend.open()
  const server = new OllamaCompatServer({
    source: opts.source ? opts.source(backend) : backend,
    host: '127.0.0.1',
    port: 0,
    version: VERSION,
    maxBodyBytes: MAX_BODY_BYTES,
  })
  t.teardown(() => server.close(), { order: 1 })
  await server.listen()
  return { backend, url: server.url }
}

export function post(url: string, body: unknown): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  })
}

/** The frames of an NDJSON body; every line, the last one included, must end with a newline. */
export async function lines(res: Response): Promise<Json[]> {
  const text = await res.text()
  if (!text.endsWith('\n'))
    throw new Error(`NDJSON body does not end with a newline: ${JSON.stringify(text)}`)
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Json)
}

export function checkMetrics(t: Test, frame: Json, what: string): void {
  for (const k of METRIC_FIELDS) {
    const v = frame[k]
    t.ok(typeof v === 'number' && Number.isInteger(v) && v >= 0, `${what}: ${k} = ${String(v)} (integer)`)
  }
  t.ok((frame.eval_count as number) > 0, `${what}: eval_count > 0`)
  t.ok((frame.prompt_eval_count as number) > 0, `${what}: prompt_eval_count > 0`)
  t.ok((frame.total_duration as number) >= (frame.eval_duration as number), `${what}: total >= eval`)
}

export async function expectError(t: Test, res: Response, status: number, what: string, pattern?: RegExp) {
  t.is(res.status, status, `${what}: status ${status}`)
  t.ok(res.headers.get('content-type')?.startsWith('application/json'), `${what}: JSON error body`)
  const body = (await res.json()) as Json
  t.is(typeof body.error, 'string', `${what}: {"error": "${String(body.error)}"}`)
  if (pattern) t.ok(pattern.test(String(body.error)), `${what}: message matches ${pattern}`)
}

/** Sends a chunked body (no Content-Length) and resolves with the status and body received. */
export function postChunked(
  url: string,
  path: string,
  totalBytes: number,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}${path}`, { method: 'POST', headers: { 'Content-Type': 'application/json' } })
    req.on('response', (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => {
        body += d
      })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      res.on('error', reject)
    })
    // The server cuts the upload short; a write error after the reply is expected.
    req.on('error', () => {})
    const chunk = Buffer.alloc(16 * 1024, 0x20)
    let sent = 0
    const pump = () => {
      while (sent < totalBytes) {
        sent += chunk.length
        if (!req.write(chunk)) return void req.once('drain', pump)
      }
      req.end()
    }
    pump()
  })
}

/** Sleeps without yielding, like an engine busy computing the next token. */
function busy(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
}

/**
 * The engine with each token delivered `msPerToken` later, like a slower
 * model, so a client can hang up mid-generation; remembers the last outcome.
 */
export class SlowSource implements InferenceSource {
  last: Promise<GenerationResult | MeshError> | null = null
  constructor(
    private readonly inner: InferenceSource,
    private readonly msPerToken: number,
  ) {}
  private slow(cb: GenerateCallbacks = {}): GenerateCallbacks {
    return {
      ...cb,
      onToken: (text) => {
        busy(this.msPerToken)
        cb.onToken?.(text)
      },
    }
  }
  private track(p: Promise<GenerationResult>): Promise<GenerationResult> {
    this.last = p.catch((err: unknown) => MeshError.from(err))
    return p
  }
  listModels = () => this.inner.listModels()
  showModel = (name: string) => this.inner.showModel(name)
  runningModels = () => this.inner.runningModels()
  embed: InferenceSource['embed'] = (req, cb) => this.inner.embed(req, cb)
  chat: InferenceSource['chat'] = (req, cb) => this.track(this.inner.chat(req, this.slow(cb)))
  generate: InferenceSource['generate'] = (req, cb) => this.track(this.inner.generate(req, this.slow(cb)))
}
