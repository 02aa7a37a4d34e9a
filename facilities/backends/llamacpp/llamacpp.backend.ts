/**
 * In-process llama.cpp backend over node-llama-cpp: serves the GGUF files of
 * one folder. Models load on first use and stay loaded until idle for
 * `keepAliveMs`; each loaded model has one context whose sequences are the
 * unit of parallelism (a request holds one sequence from start to end).
 */
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import {
  type ChatHistoryItem,
  type ChatWrapper,
  GgmlType,
  GgufFileType,
  getLlama,
  JinjaTemplateChatWrapper,
  type Llama,
  LlamaChat,
  LlamaCompletion,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaEmbeddingContext,
  type LlamaModel,
  readGgufFileInfo,
  resolveChatWrapper,
  type Token,
} from 'node-llama-cpp'
import { signalOf } from '../../../kernel/cancel.js'
import { MeshError } from '../../../kernel/errors.js'
import { errorMessage, isRecord } from '../../../kernel/util.js'
import type {
  Cancellable,
  ChatMessage,
  ChatRequest,
  DoneReason,
  EmbedRequest,
  EmbedResult,
  GenerateCallbacks,
  GenerateRequest,
  GenerationResult,
  ModelDetails,
  ModelInfo,
  RunningModel,
} from '../../../kernel/wire.js'
import type { Backend } from '../types.js'

const MODEL_EXT = '.gguf'
const LATEST_TAG = ':latest'
const DEFAULT_THREADS = 1
const DEFAULT_CONTEXT_SIZE = 2048
const DEFAULT_MAX_PARALLEL = 2
const DEFAULT_KEEP_ALIVE_MS = 5 * 60_000
const MIN_CONTEXT_SIZE = 128
const MAX_PARALLEL = 64
/** Ollama's sampling defaults, so a request samples alike whichever backend serves it. */
const DEFAULT_TEMPERATURE = 0.8
const DEFAULT_TOP_K = 40
const DEFAULT_TOP_P = 0.9
const DEFAULT_MIN_P = 0
const DEFAULT_REPEAT_PENALTY = 1.1
const REPEAT_LAST_N = 64
const MAX_STOP_SEQUENCES = 16
/** Column width of `showModel().parameters`, as Ollama prints them. */
const PARAMETER_KEY_WIDTH = 30
/** What `runningModels` shows for a model that never unloads (keepAliveMs < 0). */
const NEVER_EXPIRES = '9999-12-31T23:59:59.999Z'
/** Left out of `showModel().modelInfo`: it is `showModel().template`. */
const SKIPPED_METADATA_KEYS = new Set(['tokenizer.chat_template'])
const ROLES: ReadonlySet<string> = new Set(['system', 'user', 'assistant', 'tool'])

export interface LlamaCppBackendOptions {
  /** Folder of `*.gguf` files; a model's name is its file name without `.gguf`. */
  modelsDir: string
  /** CPU threads for llama.cpp. Default 1: on small machines more threads starve each other. */
  threads?: number
  gpu?: false | 'auto'
  /** 'never' uses the prebuilt binaries only; 'auto' may compile llama.cpp when none fits. */
  build?: 'never' | 'auto'
  /** Tokens per sequence. */
  contextSize?: number
  /** Concurrent generations per loaded model (context sequences). */
  maxParallel?: number
  /** Unload a model this long after its last request ends; negative keeps models loaded. */
  keepAliveMs?: number
}

interface ModelFile {
  name: string
  path: string
  size: number
  mtimeMs: number
}

/** What listing and showing a model need from its file; computed once per file version. */
interface FileFacts {
  digest: string
  architecture: string
  parameterCount: number
  quantization: string
  chatTemplate: string
  modelInfo: Record<string, unknown>
}

interface SequenceWaiter {
  resolve(seq: LlamaContextSequence): void
  reject(err: MeshError): void
}

interface LoadedModel {
  name: string
  info: ModelInfo
  model: LlamaModel
  context: LlamaContext
  chatWrapper: ChatWrapper
  free: LlamaContextSequence[]
  waiters: SequenceWaiter[]
  embedding: Promise<LlamaEmbeddingContext> | null
  /**
   * Characters of text that can reach the context at most: `contextSize` tokens of the
   * vocabulary's longest. Longer text is cut before it is tokenized (see `withinContext`).
   */
  maxInputChars: number
  /** Requests holding the model (waiting, generating or embedding); it never unloads under them. */
  users: number
  lastUsed: number
  idleTimer: NodeJS.Timeout | null
  unloaded: boolean
}

/** Sampling and limits after validation, in node-llama-cpp's terms. */
interface SamplingPlan {
  temperature: number
  topK: number
  topP: number
  minP: number
  seed: number | undefined
  repeatPenalty: false | { penalty: number; lastTokens: number }
  /** undefined: up to the context size. */
  maxTokens: number | undefined
  stop: string[]
}

interface RawOutput {
  response: string
  stopReason: string
  /** Tokens of the whole prompt (cached prefix included), as Ollama's prompt_eval_count. */
  promptTokens: number
}

type Producer = (
  seq: LlamaContextSequence,
  lm: LoadedModel,
  hooks: { signal: AbortSignal; onTextChunk(text: string): void; onToken(tokens: Token[]): void },
) => Promise<RawOutput>

function isNotFound(err: unknown): boolean {
  return isRecord(err) && (err.code === 'ENOENT' || err.code === 'ENOTDIR')
}

function checkModelName(model: unknown): string {
  if (typeof model !== 'string' || model.trim() === '')
    throw MeshError.badRequest('model must be a non-empty string')
  return model
}

function numberOption(
  options: Record<string, unknown>,
  key: string,
  check: (n: number) => boolean,
  rule: string,
): number | undefined {
  const v = options[key]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'number' || !Number.isFinite(v) || !check(v)) {
    throw MeshError.badRequest(`options.${key} must be ${rule}`, { option: key })
  }
  return v
}

/** Validates Ollama-style options and fills in the defaults. Throws ERR_BAD_REQUEST. */
function planSampling(raw: unknown): SamplingPlan {
  if (raw !== undefined && raw !== null && !isRecord(raw))
    throw MeshError.badRequest('options must be an object')
  const o = (raw ?? {}) as Record<string, unknown>
  const temperature = numberOption(o, 'temperature', (n) => n >= 0, 'a number >= 0')
  const topK = numberOption(o, 'top_k', (n) => Number.isInteger(n) && n >= 0, 'an integer >= 0')
  const topP = numberOption(o, 'top_p', (n) => n >= 0 && n <= 1, 'a number from 0 to 1')
  const minP = numberOption(o, 'min_p', (n) => n >= 0 && n <= 1, 'a number from 0 to 1')
  const seed = numberOption(o, 'seed', Number.isSafeInteger, 'an integer')
  const numPredict = numberOption(o, 'num_predict', (n) => Number.isInteger(n) && n >= -2, 'an integer >= -2')
  const repeatPenalty = numberOption(o, 'repeat_penalty', (n) => n > 0, 'a number > 0')
  // The context is shared by every request on a model, so a per-request num_ctx is checked but not applied.
  numberOption(o, 'num_ctx', (n) => Number.isInteger(n) && n > 0, 'an integer > 0')

  let stop: string[] = []
  if (o.stop !== undefined && o.stop !== null) {
    if (!Array.isArray(o.stop) || !o.stop.every((s) => typeof s === 'string')) {
      throw MeshError.badRequest('options.stop must be an array of strings', { option: 'stop' })
    }
    if (o.stop.length > MAX_STOP_SEQUENCES) {
      throw MeshError.badRequest(`options.stop takes at most ${MAX_STOP_SEQUENCES} strings`, {
        option: 'stop',
      })
    }
    // An empty stop string would match before the first token.
    stop = (o.stop as string[]).filter((s) => s.length > 0)
  }

  const penalty = repeatPenalty ?? DEFAULT_REPEAT_PENALTY
  return {
    temperature: temperature ?? DEFAULT_TEMPERATURE,
    topK: topK ?? DEFAULT_TOP_K,
    topP: topP ?? DEFAULT_TOP_P,
    minP: minP ?? DEFAULT_MIN_P,
    // Ollama treats a negative seed as "random"; llama.cpp samplers take a u32.
    seed: seed === undefined || seed < 0 ? undefined : seed % 2 ** 32,
    repeatPenalty: penalty === 1 ? false : { penalty, lastTokens: REPEAT_LAST_N },
    maxTokens: numPredict === undefined || numPredict < 0 ? undefined : numPredict,
    stop,
  }
}

/** Maps wire messages to node-llama-cpp's history, ending with the model turn to generate. Throws ERR_BAD_REQUEST. */
function toChatHistory(messages: unknown): ChatHistoryItem[] {
  if (!Array.isArray(messages) || messages.length === 0) {
    throw MeshError.badRequest('messages must be a non-empty array')
  }
  const history: ChatHistoryItem[] = []
  messages.forEach((m: unknown, i) => {
    if (!isRecord(m)) throw MeshError.badRequest(`messages[${i}] must be an object`)
    const { role, content } = m as Partial<ChatMessage>
    if (typeof role !== 'string' || !ROLES.has(role)) {
      throw MeshError.badRequest(`messages[${i}].role must be one of ${[...ROLES].join(', ')}`)
    }
    if (typeof content !== 'string') throw MeshError.badRequest(`messages[${i}].content must be a string`)
    if (role === 'system') history.push({ type: 'system', text: content })
    else if (role === 'assistant') history.push({ type: 'model', response: [content] })
    // node-llama-cpp has no tool-result turn outside its own function calling; the model reads it as input.
    else history.push({ type: 'user', text: content })
  })
  // A trailing assistant message is a prefix to continue, as in Ollama.
  if (history[history.length - 1]?.type !== 'model') history.push({ type: 'model', response: [] })
  return history
}

/**
 * A history whose every text fits what the context can hold (`maxChars`, its last part).
 * The context would keep no more of a longer text anyway, but tokenizing it whole runs on
 * the event loop — a 1 MiB prompt blocked it ~7 s per request on the tiny model, so status
 * answers and every other request on the processor waited behind one user's prompt.
 */
function withinContext(history: ChatHistoryItem[], maxChars: number): ChatHistoryItem[] {
  const fits = (t: unknown) => typeof t !== 'string' || t.length <= maxChars
  const ok = history.every((h) => (h.type === 'model' ? h.response.every(fits) : fits(h.text)))
  if (ok) return history
  return history.map((h): ChatHistoryItem => {
    if (h.type === 'model') {
      return { ...h, response: h.response.map((r) => (typeof r === 'string' ? tailOf(r, maxChars) : r)) }
    }
    if (h.type === 'user') return { ...h, text: tailOf(h.text, maxChars) }
    return typeof h.text === 'string' ? { ...h, text: tailOf(h.text, maxChars) } : h
  })
}

/** The longest token of a model's vocabulary in characters (from its GGUF), or Infinity when unknown. */
function longestTokenChars(model: LlamaModel): number {
  const metadata: unknown = model.fileInfo.metadata
  const tokenizer = isRecord(metadata) ? metadata.tokenizer : undefined
  const ggml = isRecord(tokenizer) ? tokenizer.ggml : undefined
  const tokens = isRecord(ggml) ? ggml.tokens : undefined
  if (!Array.isArray(tokens) || tokens.length === 0) return Number.POSITIVE_INFINITY
  let longest = 1
  for (const t of tokens) if (typeof t === 'string' && t.length > longest) longest = t.length
  return longest
}

/** `text` cut to its last `max` characters (never starting inside a surrogate pair). */
function tailOf(text: string, max: number): string {
  if (text.length <= max) return text
  let start = text.length - max
  const code = text.charCodeAt(start)
  if (code >= 0xdc00 && code <= 0xdfff) start++
  return text.slice(start)
}

/** `text` cut to its first `max` characters (never ending inside a surrogate pair). */
function headOf(text: string, max: number): string {
  if (text.length <= max) return text
  const code = text.charCodeAt(max - 1)
  return text.slice(0, code >= 0xd800 && code <= 0xdbff ? max - 1 : max)
}

/**
 * The file name (without `.gguf`) a model name refers to; `name:latest` is an
 * alias of `name`. Throws ERR_BAD_REQUEST for a non-string, ERR_MODEL_NOT_FOUND
 * for anything path-like, which can never name a file of the one folder.
 */
function modelFileName(name: unknown): string {
  const requested = checkModelName(name)
  const base = requested.endsWith(LATEST_TAG) ? requested.slice(0, -LATEST_TAG.length) : requested
  if (base === '' || base.includes('/') || base.includes('\\') || base.startsWith('.')) {
    throw MeshError.modelNotFound(requested)
  }
  return base
}

function doneReasonOf(stopReason: string): DoneReason {
  if (stopReason === 'maxTokens') return 'length'
  if (stopReason === 'abort') return 'cancelled'
  return 'stop'
}

function formatParameterCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)}B`
  if (n >= 1e5) return `${(n / 1e6).toFixed(1)}M`
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`
  return String(n)
}

/** Flattens GGUF metadata to Ollama's `model_info` shape: dotted keys, scalar values only. */
function flattenMetadata(node: unknown, prefix: string, out: Record<string, unknown>): void {
  if (!isRecord(node)) return
  for (const [key, value] of Object.entries(node)) {
    const path = prefix ? `${prefix}.${key}` : key
    if (SKIPPED_METADATA_KEYS.has(path)) continue
    if (isRecord(value)) flattenMetadata(value, path, out)
    else if (typeof value === 'bigint') out[path] = Number(value)
    else if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean')
      out[path] = value
  }
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

async function readFileFacts(path: string): Promise<FileFacts> {
  const [digest, info] = await Promise.all([
    sha256File(path),
    readGgufFileInfo(path, { readTensorInfo: true, logWarnings: false }),
  ])
  const metadata: unknown = info.metadata
  const general = isRecord(metadata) && isRecord(metadata.general) ? metadata.general : {}
  const tokenizer = isRecord(metadata) && isRecord(metadata.tokenizer) ? metadata.tokenizer : {}
  // The reader is lenient (it reads unknown versions as v3); a file without an architecture is not a model.
  if ((info.version !== 2 && info.version !== 3) || typeof general.architecture !== 'string') {
    throw new Error(`${path} is not a GGUF model file`)
  }
  const architecture = general.architecture

  let parameterCount = 0
  const tensorTypes = new Map<number, number>()
  for (const t of info.tensorInfo ?? []) {
    const n = t.dimensions.reduce<number>((a, d) => a * Number(d), 1)
    parameterCount += n
    tensorTypes.set(t.ggmlType, (tensorTypes.get(t.ggmlType) ?? 0) + n)
  }

  let quantization = 'unknown'
  if (typeof general.file_type === 'number' && GgufFileType[general.file_type] !== undefined) {
    quantization = GgufFileType[general.file_type].replace(/^(MOSTLY|ALL)_/, '')
  } else if (tensorTypes.size > 0) {
    const dominant = [...tensorTypes].sort((a, b) => b[1] - a[1])[0][0]
    quantization = GgmlType[dominant] ?? 'unknown'
  }

  const modelInfo: Record<string, unknown> = {}
  flattenMetadata(metadata, '', modelInfo)
  modelInfo['general.parameter_count'] = parameterCount
  return {
    digest,
    architecture,
    parameterCount,
    quantization,
    chatTemplate: typeof tokenizer.chat_template === 'string' ? tokenizer.chat_template : '',
    modelInfo,
  }
}

/**
 * The model's own Jinja chat template when node-llama-cpp accepts it, else
 * node-llama-cpp's pick. `resolveChatWrapper` only swaps in a specialised
 * wrapper that renders exactly like the template, but finding out blocks the
 * event loop for ~1 s on a template that matches none (measured on the tiny
 * model); building the Jinja wrapper directly takes ~30 ms and gives the same
 * prompt. The constructor throws on a template that drops a role.
 */
function chatWrapperFor(model: LlamaModel): ChatWrapper {
  const tokenizer: unknown = model.fileInfo.metadata.tokenizer
  const template = isRecord(tokenizer) ? tokenizer.chat_template : undefined
  if (typeof template === 'string' && template.trim() !== '') {
    try {
      return new JinjaTemplateChatWrapper({ template, tokenizer: model.tokenizer })
    } catch {
      // Unusable template: node-llama-cpp's resolution picks a wrapper from the model's family.
    }
  }
  return resolveChatWrapper(model, { warningLogs: false })
}

/** Rejects with `onAbort()` when `signal` fires first; `p` itself keeps running (it may be shared). */
function abortable<T>(p: Promise<T>, signal: AbortSignal, onAbort: () => MeshError): Promise<T> {
  if (signal.aborted) return Promise.reject(onAbort())
  return new Promise<T>((resolve, reject) => {
    const abort = () => reject(onAbort())
    signal.addEventListener('abort', abort, { once: true })
    p.then(
      (v) => {
        signal.removeEventListener('abort', abort)
        resolve(v)
      },
      (err: unknown) => {
        signal.removeEventListener('abort', abort)
        reject(err)
      },
    )
  })
}

export class LlamaCppBackend implements Backend {
  readonly kind = 'llamacpp' as const
  private readonly modelsDir: string
  private readonly threads: number
  private readonly gpu: false | 'auto'
  private readonly build: 'never' | 'auto'
  private readonly contextSize: number
  private readonly maxParallel: number
  private readonly keepAliveMs: number

  private llama: Llama | null = null
  private opening: Promise<void> | null = null
  private closing: Promise<void> | null = null
  private closed = false
  /** Aborts every in-flight request when the backend closes. */
  private readonly closeController = new AbortController()
  private readonly inflight = new Set<Promise<unknown>>()
  private readonly loads = new Map<string, Promise<LoadedModel>>()
  private readonly loaded = new Map<string, LoadedModel>()
  /** Keyed by path; the version key (mtime + size) says when the file changed. */
  private readonly facts = new Map<string, { version: string; facts: Promise<FileFacts> }>()

  /** Throws ERR_BAD_CONFIG on out-of-range options. */
  constructor(opts: LlamaCppBackendOptions) {
    const {
      modelsDir,
      threads = DEFAULT_THREADS,
      gpu = false,
      build = 'never',
      contextSize = DEFAULT_CONTEXT_SIZE,
      maxParallel = DEFAULT_MAX_PARALLEL,
      keepAliveMs = DEFAULT_KEEP_ALIVE_MS,
    } = opts
    if (typeof modelsDir !== 'string' || modelsDir === '')
      throw MeshError.badConfig('modelsDir must be a path')
    if (!Number.isInteger(threads) || threads < 1)
      throw MeshError.badConfig('threads must be an integer >= 1')
    if (gpu !== false && gpu !== 'auto') throw MeshError.badConfig("gpu must be false or 'auto'")
    if (build !== 'never' && build !== 'auto') throw MeshError.badConfig("build must be 'never' or 'auto'")
    if (!Number.isInteger(contextSize) || contextSize < MIN_CONTEXT_SIZE) {
      throw MeshError.badConfig(`contextSize must be an integer >= ${MIN_CONTEXT_SIZE}`)
    }
    if (!Number.isInteger(maxParallel) || maxParallel < 1 || maxParallel > MAX_PARALLEL) {
      throw MeshError.badConfig(`maxParallel must be an integer from 1 to ${MAX_PARALLEL}`)
    }
    if (typeof keepAliveMs !== 'number' || Number.isNaN(keepAliveMs))
      throw MeshError.badConfig('keepAliveMs must be a number')
    this.modelsDir = modelsDir
    this.threads = threads
    this.gpu = gpu
    this.build = build
    this.contextSize = contextSize
    this.maxParallel = maxParallel
    this.keepAliveMs = keepAliveMs
  }

  /** One line for logs: engine, folder, device, threads, context x parallel sequences. */
  describe(): string {
    const device = this.gpu === false ? 'cpu' : 'gpu auto'
    return `llamacpp: ${this.modelsDir} (${device}, ${this.threads} thread(s), ctx ${this.contextSize} x ${this.maxParallel})`
  }

  /** Starts llama.cpp (binaries only; models load on first use). Throws ERR_BACKEND_UNAVAILABLE. */
  async open(): Promise<void> {
    if (this.closed) throw MeshError.backendUnavailable('llama.cpp backend is closed')
    this.opening ??= getLlama({ build: this.build, gpu: this.gpu, maxThreads: this.threads }).then(
      (llama) => {
        this.llama = llama
      },
    )
    try {
      await this.opening
    } catch (err) {
      this.opening = null
      throw MeshError.backendUnavailable(`llama.cpp could not start: ${errorMessage(err)}`, err)
    }
  }

  /** Stops in-flight requests, unloads every model and releases llama.cpp. Safe to call twice. */
  close(): Promise<void> {
    this.closing ??= this.shutdown()
    return this.closing
  }

  private async shutdown(): Promise<void> {
    // Set before aborting: abort listeners run synchronously and ask abortError() why.
    this.closed = true
    this.closeController.abort()
    await Promise.allSettled([...this.inflight])
    await Promise.allSettled([...this.loads.values()])
    for (const lm of [...this.loaded.values()]) await this.unload(lm)
    await this.opening?.catch(() => {})
    const llama = this.llama
    this.llama = null
    await llama?.dispose()
  }

  /**
   * The `*.gguf` files of the models folder, read afresh on each call so new
   * files show up without a restart. Files that do not parse as GGUF (e.g.
   * still being copied) are left out. Throws ERR_BACKEND_UNAVAILABLE when the
   * folder cannot be read.
   */
  async listModels(): Promise<ModelInfo[]> {
    const files = await this.scanModels()
    const infos = await Promise.all(files.map((f) => this.modelInfo(f).catch(() => null)))
    return infos.filter((i): i is ModelInfo => i !== null)
  }

  /** Throws ERR_MODEL_NOT_FOUND, ERR_BAD_REQUEST (bad name) or ERR_BACKEND_UNAVAILABLE (unreadable file). */
  async showModel(name: string): Promise<ModelDetails> {
    const file = await this.findModel(name)
    const [info, facts] = await Promise.all([this.modelInfo(file), this.fileFacts(file)]).catch(
      (err: unknown) => {
        throw MeshError.backendUnavailable(`cannot read model '${file.name}': ${errorMessage(err)}`, err)
      },
    )
    const parameters = [
      ['num_ctx', String(this.contextSize)],
      ['temperature', String(DEFAULT_TEMPERATURE)],
      ['top_k', String(DEFAULT_TOP_K)],
      ['top_p', String(DEFAULT_TOP_P)],
      ['repeat_penalty', String(DEFAULT_REPEAT_PENALTY)],
      ['repeat_last_n', String(REPEAT_LAST_N)],
    ]
      .map(([k, v]) => `${k.padEnd(PARAMETER_KEY_WIDTH)} ${v}`)
      .join('\n')
    return {
      ...info,
      template: facts.chatTemplate,
      parameters,
      modelInfo: facts.modelInfo,
      capabilities: ['completion', 'embedding'],
    }
  }

  /** Loaded models and when they unload if left idle. Never throws. */
  async runningModels(): Promise<RunningModel[]> {
    const now = Date.now()
    return [...this.loaded.values()].map((lm) => {
      let expiresAt = NEVER_EXPIRES
      if (this.keepAliveMs >= 0) {
        expiresAt = new Date((lm.users > 0 ? now : lm.lastUsed) + this.keepAliveMs).toISOString()
      }
      let sizeVram = 0
      try {
        sizeVram = lm.model.memoryUsage.vram + lm.context.memoryUsage.vram
      } catch {
        // Disposed between the listing and this read: it is on its way out.
      }
      return { ...lm.info, expiresAt, sizeVram }
    })
  }

  /**
   * Chat completion with the model's chat template over the whole history.
   * Streams text through `cb.onToken`. Throws ERR_BAD_REQUEST, ERR_MODEL_NOT_FOUND,
   * ERR_CANCELLED (aborted before any text), ERR_BACKEND_UNAVAILABLE.
   */
  async chat(req: ChatRequest, cb: GenerateCallbacks = {}): Promise<GenerationResult> {
    if (!isRecord(req)) throw MeshError.badRequest('request must be an object')
    const model = checkModelName(req.model)
    const history = toChatHistory(req.messages)
    const plan = planSampling(req.options)
    return this.generation(model, plan, cb, (seq, lm, hooks) => this.runChat(seq, lm, history, plan, hooks))
  }

  /**
   * Completion of `prompt`: through the chat template (with `system` when
   * given), or as plain text when `raw`. An empty prompt only loads the model,
   * as in Ollama. Throws like `chat`.
   */
  async generate(req: GenerateRequest, cb: GenerateCallbacks = {}): Promise<GenerationResult> {
    if (!isRecord(req)) throw MeshError.badRequest('request must be an object')
    const model = checkModelName(req.model)
    const { prompt, system, raw } = req
    if (typeof prompt !== 'string') throw MeshError.badRequest('prompt must be a string')
    if (system !== undefined && system !== null && typeof system !== 'string') {
      throw MeshError.badRequest('system must be a string')
    }
    if (raw !== undefined && raw !== null && typeof raw !== 'boolean')
      throw MeshError.badRequest('raw must be a boolean')
    const plan = planSampling(req.options)
    if (prompt === '') return this.generation(model, { ...plan, maxTokens: 0 }, cb, null)
    if (raw)
      return this.generation(model, plan, cb, (seq, lm, hooks) =>
        this.runCompletion(seq, lm, prompt, plan, hooks),
      )
    const history: ChatHistoryItem[] = []
    if (system) history.push({ type: 'system', text: system })
    history.push({ type: 'user', text: prompt }, { type: 'model', response: [] })
    return this.generation(model, plan, cb, (seq, lm, hooks) => this.runChat(seq, lm, history, plan, hooks))
  }

  /**
   * One L2-normalised vector per input (as Ollama's /api/embed). Inputs longer
   * than the context are cut unless `truncate: false`, which makes them
   * ERR_BAD_REQUEST. Throws ERR_MODEL_NOT_FOUND, ERR_CANCELLED, ERR_BACKEND_UNAVAILABLE.
   */
  async embed(req: EmbedRequest, cb: Cancellable = {}): Promise<EmbedResult> {
    if (!isRecord(req)) throw MeshError.badRequest('request must be an object')
    const model = checkModelName(req.model)
    const input: unknown = req.input
    if (!Array.isArray(input) || !input.every((s) => typeof s === 'string')) {
      throw MeshError.badRequest('input must be an array of strings')
    }
    const texts = input as string[]
    if (texts.some((s) => s === '')) throw MeshError.badRequest('input strings must not be empty')
    if (req.truncate !== undefined && req.truncate !== null && typeof req.truncate !== 'boolean') {
      throw MeshError.badRequest('truncate must be a boolean')
    }
    const truncate = req.truncate !== false

    return this.track(signalOf(cb), async (signal) => {
      const started = performance.now()
      const lm = await this.lease(model, signal)
      const loadMs = performance.now() - started
      try {
        const ctx = await abortable(this.embeddingContext(lm), signal, () => this.abortError())
        const embeddings: number[][] = []
        let promptTokens = 0
        for (const input of texts) {
          if (signal.aborted) throw this.abortError()
          // Past maxInputChars an input is surely longer than the context: cut before tokenizing.
          if (!truncate && input.length > lm.maxInputChars) {
            throw MeshError.badRequest(`input is more than ${this.contextSize} tokens, the context's size`, {
              limit: this.contextSize,
            })
          }
          let tokens = lm.model.tokenize(headOf(input, lm.maxInputChars))
          // calculateInputLength adds the BOS/EOS the model wants; the context must hold them too.
          const overhead = ctx.calculateInputLength(tokens) - tokens.length
          const room = this.contextSize - 1 - overhead
          if (tokens.length > room) {
            if (!truncate) {
              throw MeshError.badRequest(`input is ${tokens.length} tokens, the context holds ${room}`, {
                tokens: tokens.length,
                limit: room,
              })
            }
            tokens = tokens.slice(0, room)
          }
          const { vector } = await ctx.getEmbeddingFor(tokens)
          promptTokens += ctx.calculateInputLength(tokens)
          const norm = Math.sqrt(vector.reduce((a, x) => a + x * x, 0))
          embeddings.push(norm > 0 ? vector.map((x) => x / norm) : [...vector])
        }
        return { embeddings, promptTokens, totalMs: performance.now() - started, loadMs }
      } catch (err) {
        throw this.toMeshError(err, signal)
      } finally {
        this.unlease(lm)
      }
    })
  }

  // ---------------------------------------------------------------- generation

  private async runChat(
    seq: LlamaContextSequence,
    lm: LoadedModel,
    history: ChatHistoryItem[],
    plan: SamplingPlan,
    hooks: Parameters<Producer>[2],
  ): Promise<RawOutput> {
    history = withinContext(history, lm.maxInputChars)
    const chat = new LlamaChat({
      contextSequence: seq,
      chatWrapper: lm.chatWrapper,
      autoDisposeSequence: false,
    })
    // What LlamaChat will evaluate: the history rendered by the same wrapper. Counted whole, even
    // when a cached prefix spares evaluating part of it: that is what usage is charged on.
    // A history longer than the context is cut to fit it: no more than the context is evaluated.
    const promptTokens = Math.min(
      this.contextSize,
      lm.chatWrapper.generateContextState({ chatHistory: history }).contextText.tokenize(lm.model.tokenizer)
        .length,
    )
    try {
      const res = await chat.generateResponse(history, {
        ...this.samplingFor(plan),
        ...hooks,
        stopOnAbortSignal: true,
      })
      return { response: res.response, stopReason: res.metadata.stopReason, promptTokens }
    } finally {
      chat.dispose({ disposeSequence: false })
    }
  }

  private async runCompletion(
    seq: LlamaContextSequence,
    lm: LoadedModel,
    text: string,
    plan: SamplingPlan,
    hooks: Parameters<Producer>[2],
  ): Promise<RawOutput> {
    // The context keeps a long prompt's end; cut it before tokenizing (see withinContext).
    const prompt = tailOf(text, lm.maxInputChars)
    const completion = new LlamaCompletion({ contextSequence: seq, autoDisposeSequence: false })
    const model = seq.model
    const promptTokens = Math.min(
      this.contextSize,
      model.tokenize(prompt).length +
        (model.tokens.shouldPrependBosToken && model.tokens.bos !== null ? 1 : 0),
    )
    try {
      const res = await completion.generateCompletionWithMeta(prompt, {
        ...this.samplingFor(plan),
        ...hooks,
        stopOnAbortSignal: true,
      })
      return { response: res.response, stopReason: res.metadata.stopReason, promptTokens }
    } finally {
      completion.dispose({ disposeSequence: false })
    }
  }

  private samplingFor(plan: SamplingPlan) {
    return {
      temperature: plan.temperature,
      topK: plan.topK,
      topP: plan.topP,
      minP: plan.minP,
      seed: plan.seed,
      repeatPenalty: plan.repeatPenalty,
      // Unbounded generation would hold a sequence forever on a model that never says EOS.
      maxTokens: plan.maxTokens ?? this.contextSize,
      customStopTriggers: plan.stop,
    }
  }

  /**
   * Shared frame of chat and generate: lease the model, wait for a sequence,
   * run `produce`, count and time. `produce` null (or num_predict 0) only loads
   * the model.
   */
  private generation(
    model: string,
    plan: SamplingPlan,
    cb: GenerateCallbacks,
    produce: Producer | null,
  ): Promise<GenerationResult> {
    if (typeof cb !== 'object' || cb === null) throw MeshError.badRequest('callbacks must be an object')
    const { onToken } = cb
    if (onToken !== undefined && typeof onToken !== 'function')
      throw MeshError.badRequest('onToken must be a function')

    return this.track(signalOf(cb), async (signal) => {
      const started = performance.now()
      const lm = await this.lease(model, signal)
      const loadMs = performance.now() - started
      try {
        if (produce === null || plan.maxTokens === 0) {
          const totalMs = performance.now() - started
          return {
            text: '',
            doneReason: produce === null ? 'stop' : 'length',
            promptTokens: 0,
            completionTokens: 0,
            totalMs,
            loadMs,
            promptEvalMs: 0,
            evalMs: 0,
          }
        }
        const seq = await this.acquireSequence(lm, signal)
        let failed = false
        try {
          const genStarted = performance.now()
          let firstTokenAt: number | null = null
          let completionTokens = 0
          const out = await produce(seq, lm, {
            signal,
            onTextChunk: (text) => {
              if (text === '') return
              firstTokenAt ??= performance.now()
              onToken?.(text)
            },
            onToken: (tokens) => {
              completionTokens += tokens.length
            },
          })
          const ended = performance.now()
          const doneReason = doneReasonOf(out.stopReason)
          if (doneReason === 'cancelled' && out.response === '') throw this.abortError()
          return {
            text: out.response,
            doneReason,
            promptTokens: out.promptTokens,
            completionTokens,
            totalMs: ended - started,
            loadMs,
            promptEvalMs: (firstTokenAt ?? ended) - genStarted,
            evalMs: firstTokenAt === null ? 0 : ended - firstTokenAt,
          }
        } catch (err) {
          failed = true
          throw err
        } finally {
          // After a failure the KV state may not match the tokens node-llama-cpp believes are there.
          if (failed) await seq.clearHistory().catch(() => {})
          this.releaseSequence(lm, seq)
        }
      } catch (err) {
        throw this.toMeshError(err, signal)
      } finally {
        this.unlease(lm)
      }
    })
  }

  /** Runs a request with a signal that also fires on close, and keeps it visible to `close()`. */
  private track<T>(userSignal: AbortSignal | undefined, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(MeshError.backendUnavailable('llama.cpp backend is closed'))
    if (!this.llama) return Promise.reject(MeshError.backendUnavailable('llama.cpp backend is not open'))
    if (userSignal !== undefined && !(userSignal instanceof AbortSignal)) {
      return Promise.reject(MeshError.badRequest('signal must be an AbortSignal'))
    }
    if (userSignal?.aborted) return Promise.reject(MeshError.cancelled())
    const signal = userSignal
      ? AbortSignal.any([userSignal, this.closeController.signal])
      : this.closeController.signal
    const p = fn(signal)
    this.inflight.add(p)
    const forget = () => this.inflight.delete(p)
    p.then(forget, forget)
    return p
  }

  private abortError(): MeshError {
    return this.closed ? MeshError.backendUnavailable('llama.cpp backend closed') : MeshError.cancelled()
  }

  private toMeshError(err: unknown, signal: AbortSignal): MeshError {
    if (err instanceof MeshError) return err
    if (signal.aborted) return this.abortError()
    return MeshError.internal(`llama.cpp: ${errorMessage(err)}`, err)
  }

  // ---------------------------------------------------------------- models

  private async scanModels(): Promise<ModelFile[]> {
    let names: string[]
    try {
      names = await readdir(this.modelsDir)
    } catch (err) {
      if (isNotFound(err)) return []
      throw MeshError.backendUnavailable(
        `cannot read models folder ${this.modelsDir}: ${errorMessage(err)}`,
        err,
      )
    }
    const models = names
      .filter((n) => n.endsWith(MODEL_EXT))
      .map((n) => n.slice(0, -MODEL_EXT.length))
      .sort()
    const files = await Promise.all(models.map((name) => this.statModel(name)))
    return files.filter((f): f is ModelFile => f !== null)
  }

  private async statModel(name: string): Promise<ModelFile | null> {
    const path = join(this.modelsDir, name + MODEL_EXT)
    try {
      const s = await stat(path)
      return s.isFile() ? { name, path, size: s.size, mtimeMs: s.mtimeMs } : null
    } catch (err) {
      if (isNotFound(err)) return null
      throw MeshError.backendUnavailable(`cannot read ${path}: ${errorMessage(err)}`, err)
    }
  }

  /** Resolves a model name (or `name:latest`) to its file. Throws ERR_BAD_REQUEST or ERR_MODEL_NOT_FOUND. */
  private async findModel(name: unknown): Promise<ModelFile> {
    const file = await this.statModel(modelFileName(name))
    if (!file) throw MeshError.modelNotFound(String(name))
    return file
  }

  private fileFacts(file: ModelFile): Promise<FileFacts> {
    const version = `${file.mtimeMs}:${file.size}`
    const cached = this.facts.get(file.path)
    if (cached?.version === version) return cached.facts
    const facts = readFileFacts(file.path)
    this.facts.set(file.path, { version, facts })
    facts.catch(() => {
      // Do not pin a failure: the file may be mid-copy and fine on the next scan.
      if (this.facts.get(file.path)?.facts === facts) this.facts.delete(file.path)
    })
    return facts
  }

  private async modelInfo(file: ModelFile): Promise<ModelInfo> {
    const facts = await this.fileFacts(file)
    return {
      name: file.name,
      size: file.size,
      digest: facts.digest,
      modifiedAt: new Date(file.mtimeMs).toISOString(),
      details: {
        format: 'gguf',
        family: facts.architecture,
        families: [facts.architecture],
        parameterSize: formatParameterCount(facts.parameterCount),
        quantizationLevel: facts.quantization,
      },
    }
  }

  /**
   * The loaded model for `name`, loading it if needed (one load per model,
   * shared by concurrent callers), with a use counted against unloading.
   * Pair with `unlease`.
   */
  private async lease(name: string, signal: AbortSignal): Promise<LoadedModel> {
    for (;;) {
      // A loaded model is found without touching the disk, so requests reach the
      // sequence queue in the order they were made.
      let load = this.loads.get(modelFileName(name))
      if (!load) {
        const file = await this.findModel(name)
        load = this.loads.get(file.name)
        if (!load) {
          const started = this.load(file)
          load = started
          this.loads.set(file.name, started)
          started.catch(() => {
            if (this.loads.get(file.name) === started) this.loads.delete(file.name)
          })
        }
      }
      const lm = await abortable(load, signal, () => this.abortError())
      // An idle timer may have unloaded it between the load settling and this line.
      if (lm.unloaded) continue
      lm.users++
      if (lm.idleTimer) clearTimeout(lm.idleTimer)
      lm.idleTimer = null
      return lm
    }
  }

  private unlease(lm: LoadedModel): void {
    lm.users--
    lm.lastUsed = Date.now()
    if (lm.users > 0 || lm.unloaded || this.keepAliveMs < 0) return
    lm.idleTimer = setTimeout(() => {
      if (lm.users === 0) void this.unload(lm)
    }, this.keepAliveMs)
    lm.idleTimer.unref()
  }

  private async load(file: ModelFile): Promise<LoadedModel> {
    const llama = this.llama
    if (!llama || this.closed) throw MeshError.backendUnavailable('llama.cpp backend is not open')
    const info = await this.modelInfo(file).catch((err: unknown) => {
      throw MeshError.backendUnavailable(`cannot read model '${file.name}': ${errorMessage(err)}`, err)
    })
    let model: LlamaModel
    try {
      model = await llama.loadModel({ modelPath: file.path })
    } catch (err) {
      throw MeshError.backendUnavailable(`cannot load model '${file.name}': ${errorMessage(err)}`, err)
    }
    try {
      const context = await model.createContext({
        contextSize: this.contextSize,
        sequences: this.maxParallel,
        threads: this.threads,
      })
      const free = Array.from({ length: this.maxParallel }, () => context.getSequence())
      const lm: LoadedModel = {
        name: file.name,
        info,
        model,
        context,
        chatWrapper: chatWrapperFor(model),
        maxInputChars: this.contextSize * longestTokenChars(model),
        free,
        waiters: [],
        embedding: null,
        users: 0,
        lastUsed: Date.now(),
        idleTimer: null,
        unloaded: false,
      }
      if (this.closed) throw MeshError.backendUnavailable('llama.cpp backend closed while loading')
      this.loaded.set(file.name, lm)
      return lm
    } catch (err) {
      await model.dispose().catch(() => {})
      if (err instanceof MeshError) throw err
      throw MeshError.backendUnavailable(
        `cannot create a context for '${file.name}': ${errorMessage(err)}`,
        err,
      )
    }
  }

  private async unload(lm: LoadedModel): Promise<void> {
    if (lm.unloaded) return
    lm.unloaded = true
    if (lm.idleTimer) clearTimeout(lm.idleTimer)
    lm.idleTimer = null
    if (this.loaded.get(lm.name) === lm) {
      this.loaded.delete(lm.name)
      this.loads.delete(lm.name)
    }
    for (const w of lm.waiters.splice(0))
      w.reject(MeshError.backendUnavailable(`model '${lm.name}' unloaded`))
    const embedding = await lm.embedding?.catch(() => null)
    await embedding?.dispose().catch(() => {})
    await lm.context.dispose().catch(() => {})
    await lm.model.dispose().catch(() => {})
  }

  private embeddingContext(lm: LoadedModel): Promise<LlamaEmbeddingContext> {
    if (!lm.embedding) {
      const created = lm.model.createEmbeddingContext({
        contextSize: this.contextSize,
        threads: this.threads,
      })
      lm.embedding = created
      created.catch(() => {
        if (lm.embedding === created) lm.embedding = null
      })
    }
    return lm.embedding
  }

  // ---------------------------------------------------------------- sequences

  /** A free sequence now, or the next one released (FIFO). Throws ERR_CANCELLED when aborted while waiting. */
  private acquireSequence(lm: LoadedModel, signal: AbortSignal): Promise<LlamaContextSequence> {
    if (signal.aborted) return Promise.reject(this.abortError())
    const seq = lm.free.pop()
    if (seq) return Promise.resolve(seq)
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        const i = lm.waiters.indexOf(waiter)
        if (i >= 0) lm.waiters.splice(i, 1)
        reject(this.abortError())
      }
      const waiter: SequenceWaiter = {
        resolve: (s) => {
          signal.removeEventListener('abort', onAbort)
          resolve(s)
        },
        reject: (err) => {
          signal.removeEventListener('abort', onAbort)
          reject(err)
        },
      }
      signal.addEventListener('abort', onAbort, { once: true })
      lm.waiters.push(waiter)
    })
  }

  private releaseSequence(lm: LoadedModel, seq: LlamaContextSequence): void {
    const next = lm.waiters.shift()
    if (next) next.resolve(seq)
    else lm.free.push(seq)
  }
}
