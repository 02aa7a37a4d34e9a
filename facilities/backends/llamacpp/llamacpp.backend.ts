/**
 * In-process llama.cpp backend over node-llama-cpp: serves the GGUF files of
 * one folder (model-folder.ts). Models load on first use and stay loaded until
 * idle for `keepAliveMs` (loaded-models.ts); each loaded model has one context
 * whose sequences are the unit of parallelism (sequence-pool.ts): a request
 * holds one sequence from start to end (generation.ts).
 */
import { getLlama, type Llama } from 'node-llama-cpp'
import { signalOf } from '../../../kernel/cancel.js'
import { MeshError } from '../../../kernel/errors.js'
import { errorMessage, isRecord } from '../../../kernel/util.js'
import type {
  Cancellable,
  ChatRequest,
  EmbedRequest,
  EmbedResult,
  GenerateCallbacks,
  GenerateRequest,
  GenerationResult,
  ModelDetails,
  ModelInfo,
  RunningModel,
} from '../../../kernel/wire.js'
import { emptyResult } from '../generation-stats.js'
import {
  checkEmbedInput,
  checkModelName,
  checkOnToken,
  checkPrompt,
  refuseUnsupported,
} from '../request-checks.js'
import type { PullCallbacks, PullingBackend, PullRequest, PullResult } from '../types.js'
import { type AnswerPlan, planChatAnswer, planGenerateAnswer } from './answer-shape.js'
import { chatProducer } from './chat-generation.js'
import { toChatHistory } from './chat-history.js'
import { embeddingContextOf, embedTexts } from './embeddings.js'
import { copyModelFile, deleteModelFile } from './folder-admin.js'
import { completionProducer, type Producer, runGeneration } from './generation.js'
import { GrammarCache } from './grammars.js'
import { LoadedModels } from './loaded-models.js'
import { ModelFolder } from './model-folder.js'
import { pullGguf } from './model-pull.js'
import { promptHistory } from './prompting.js'
import { abortable, RequestLifetimes } from './request-lifetime.js'
import { defaultParameters, planSampling, type SamplingPlan } from './sampling.js'

const DEFAULT_THREADS = 1
const DEFAULT_CONTEXT_SIZE = 2048
const DEFAULT_MAX_PARALLEL = 2
const DEFAULT_KEEP_ALIVE_MS = 5 * 60_000
const MIN_CONTEXT_SIZE = 128
const MAX_PARALLEL = 64
/** What of a request's shape llama.cpp honours: all but log probabilities (LlamaChat gives none). */
const SUPPORT = { tools: true, format: true, think: true, penalties: true, logprobs: false } as const

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
  /** Told each time a model loads, with how long it took (file and context). */
  onModelLoad?: (seconds: number, model: string) => void
}

/** The grammar of a JSON answer, made when a model runs it; null for free text. */
function jsonGrammar(answer: AnswerPlan, grammars: GrammarCache) {
  return answer.kind === 'json' ? () => grammars.forSchema(answer.schema, 'format') : null
}

/** @throws ERR_BAD_CONFIG naming the first option out of range */
function checkOptions(opts: Required<Omit<LlamaCppBackendOptions, 'onModelLoad'>>): void {
  const { modelsDir, threads, gpu, build, contextSize, maxParallel, keepAliveMs } = opts
  if (typeof modelsDir !== 'string' || modelsDir === '') throw MeshError.badConfig('modelsDir must be a path')
  if (!Number.isInteger(threads) || threads < 1) throw MeshError.badConfig('threads must be an integer >= 1')
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
}

export class LlamaCppBackend implements PullingBackend {
  readonly kind = 'llamacpp' as const
  private readonly folder: ModelFolder
  private readonly threads: number
  private readonly gpu: false | 'auto'
  private readonly build: 'never' | 'auto'
  private readonly contextSize: number
  private readonly maxParallel: number
  private readonly keepAliveMs: number
  private readonly onModelLoad: ((seconds: number, model: string) => void) | undefined
  private readonly lifetimes = new RequestLifetimes()

  private llama: Llama | null = null
  /** Made once llama.cpp has started. */
  private models: LoadedModels | null = null
  private grammars: GrammarCache | null = null
  private opening: Promise<void> | null = null
  private closing: Promise<void> | null = null

  /** @throws ERR_BAD_CONFIG on out-of-range options */
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
    checkOptions({ modelsDir, threads, gpu, build, contextSize, maxParallel, keepAliveMs })
    this.folder = new ModelFolder(modelsDir)
    this.threads = threads
    this.gpu = gpu
    this.build = build
    this.contextSize = contextSize
    this.maxParallel = maxParallel
    this.keepAliveMs = keepAliveMs
    this.onModelLoad = opts.onModelLoad
  }

  /** One line for logs: engine, folder, device, threads, context x parallel sequences. */
  describe(): string {
    const device = this.gpu === false ? 'cpu' : 'gpu auto'
    return `llamacpp: ${this.folder.dir} (${device}, ${this.threads} thread(s), ctx ${this.contextSize} x ${this.maxParallel})`
  }

  /** Starts llama.cpp (binaries only; models load on first use). @throws ERR_BACKEND_UNAVAILABLE */
  async open(): Promise<void> {
    if (this.lifetimes.closed) throw MeshError.backendUnavailable('llama.cpp backend is closed')
    this.opening ??= getLlama({ build: this.build, gpu: this.gpu, maxThreads: this.threads }).then(
      (llama) => {
        this.llama = llama
        this.grammars = new GrammarCache(llama)
        this.models = new LoadedModels({
          llama,
          folder: this.folder,
          lifetimes: this.lifetimes,
          contextSize: this.contextSize,
          maxParallel: this.maxParallel,
          threads: this.threads,
          keepAliveMs: this.keepAliveMs,
          ...(this.onModelLoad ? { onLoad: this.onModelLoad } : {}),
        })
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
    await this.lifetimes.close()
    await this.models?.close()
    await this.opening?.catch(() => {})
    const llama = this.llama
    this.llama = null
    await llama?.dispose()
  }

  /**
   * The `*.gguf` files of the models folder, read afresh on each call so new
   * files show up without a restart. Files that do not parse as GGUF (e.g.
   * still being copied) are left out.
   * @throws ERR_BACKEND_UNAVAILABLE when the folder cannot be read
   */
  async listModels(): Promise<ModelInfo[]> {
    const files = await this.folder.scan()
    const infos = await Promise.all(files.map((f) => this.folder.infoOf(f).catch(() => null)))
    return infos.filter((i): i is ModelInfo => i !== null)
  }

  /** Downloads a GGUF into the models folder, resumably and verified (model-pull.ts). */
  pullModel(req: PullRequest, cb: PullCallbacks = {}): Promise<PullResult> {
    return pullGguf(this.folder.dir, req, cb)
  }

  /** @throws ERR_MODEL_NOT_FOUND, ERR_BAD_REQUEST (bad name) or ERR_BACKEND_UNAVAILABLE (unreadable file) */
  async showModel(name: string): Promise<ModelDetails> {
    const file = await this.folder.find(name)
    const [info, facts] = await Promise.all([this.folder.infoOf(file), this.folder.factsOf(file)]).catch(
      (err: unknown) => {
        throw MeshError.backendUnavailable(`cannot read model '${file.name}': ${errorMessage(err)}`, err)
      },
    )
    return {
      ...info,
      template: facts.chatTemplate,
      parameters: defaultParameters(this.contextSize),
      modelInfo: facts.modelInfo,
      // Tools on any model: through its own call syntax, or forced by a grammar (tool-calls.ts).
      capabilities: ['completion', 'tools', 'embedding'],
    }
  }

  /** Deletes the model's file, unloading it first. @throws ERR_MODEL_NOT_FOUND, ERR_CONFLICT while in use */
  async deleteModel(name: string): Promise<void> {
    return this.track(undefined, (_signal, models) => deleteModelFile(this.folder, models, name))
  }

  /** DESTINATION.gguf, a hard link (or copy) of the source's file. @throws ERR_MODEL_NOT_FOUND, ERR_CONFLICT */
  async copyModel(source: string, destination: string): Promise<void> {
    return this.track(undefined, () => copyModelFile(this.folder, checkModelName(source), destination))
  }

  /** Loads the model, to stay `keepAliveMs` idle (its own from then on). @throws ERR_MODEL_NOT_FOUND */
  async loadModel(name: string, keepAliveMs?: number): Promise<void> {
    return this.track(undefined, (signal, models) => models.warm(name, keepAliveMs, signal))
  }

  /** Unloads the model now; false when it was not loaded. @throws ERR_CONFLICT while in use */
  async unloadModel(name: string): Promise<boolean> {
    return this.track(undefined, (_signal, models) => models.unloadIdle(name))
  }

  /** Loaded models and when they unload if left idle. Never throws. */
  async runningModels(): Promise<RunningModel[]> {
    return this.models?.running() ?? []
  }

  /**
   * Chat completion with the model's chat template over the whole history, tool calls and
   * results included (chat-history.ts). Streams text through `cb.onToken`, and reasoning and
   * calls through `cb.onDelta`. `format` puts the answer under a JSON grammar; `tools` are
   * offered through node-llama-cpp's function calling, or one call is forced by a grammar
   * (`toolChoice` required or {name}, tool-calls.ts); `think` keeps reasoning apart.
   * @throws ERR_BAD_REQUEST, ERR_UNSUPPORTED (`logprobs`; `think` on a model that cannot
   * reason; a schema no grammar can enforce), ERR_MODEL_NOT_FOUND, ERR_CANCELLED (aborted
   * before any text), ERR_BACKEND_UNAVAILABLE
   */
  async chat(req: ChatRequest, cb: GenerateCallbacks = {}): Promise<GenerationResult> {
    if (!isRecord(req)) throw MeshError.badRequest('request must be an object')
    const model = checkModelName(req.model)
    const history = toChatHistory(req.messages)
    refuseUnsupported(req, 'llama.cpp', SUPPORT)
    const answer = planChatAnswer(req)
    const plan = planSampling(req.options, this.contextSize)
    return this.generation(model, plan, cb, (grammars) =>
      chatProducer(history, plan, answer, this.contextSize, grammars),
    )
  }

  /**
   * Completion of `prompt`: through the chat template (with `system` when
   * given), or as plain text when `raw`. An empty prompt only loads the model,
   * as in Ollama. `format` and `think` as in `chat` (`think` not on a raw prompt).
   * @throws like `chat`
   */
  async generate(req: GenerateRequest, cb: GenerateCallbacks = {}): Promise<GenerationResult> {
    if (!isRecord(req)) throw MeshError.badRequest('request must be an object')
    const model = checkModelName(req.model)
    const { system, raw } = req
    const prompt = checkPrompt(req.prompt)
    if (system !== undefined && system !== null && typeof system !== 'string') {
      throw MeshError.badRequest('system must be a string')
    }
    if (raw !== undefined && raw !== null && typeof raw !== 'boolean')
      throw MeshError.badRequest('raw must be a boolean')
    refuseUnsupported(req, 'llama.cpp', SUPPORT)
    const answer = planGenerateAnswer(req)
    const plan = planSampling(req.options, this.contextSize)
    if (prompt === '') return this.generation(model, { ...plan, maxTokens: 0 }, cb, null)
    return this.generation(model, plan, cb, (grammars) =>
      raw
        ? completionProducer(prompt, plan, this.contextSize, jsonGrammar(answer, grammars))
        : chatProducer(promptHistory(prompt, system), plan, answer, this.contextSize, grammars),
    )
  }

  /**
   * One L2-normalised vector per input (as Ollama's /api/embed). Inputs longer
   * than the context are cut unless `truncate: false`, which makes them
   * ERR_BAD_REQUEST.
   * @throws ERR_BAD_REQUEST, ERR_MODEL_NOT_FOUND, ERR_CANCELLED, ERR_BACKEND_UNAVAILABLE
   */
  async embed(req: EmbedRequest, cb: Cancellable = {}): Promise<EmbedResult> {
    if (!isRecord(req)) throw MeshError.badRequest('request must be an object')
    const model = checkModelName(req.model)
    const texts = checkEmbedInput(req.input)
    if (texts.some((s) => s === '')) throw MeshError.badRequest('input strings must not be empty')
    if (req.truncate !== undefined && req.truncate !== null && typeof req.truncate !== 'boolean') {
      throw MeshError.badRequest('truncate must be a boolean')
    }
    const truncate = req.truncate !== false
    const abortError = () => this.lifetimes.abortError()

    return this.track(signalOf(cb), async (signal, models) => {
      const started = performance.now()
      const lm = await models.lease(model, signal)
      const loadMs = performance.now() - started
      try {
        const ctx = await abortable(
          embeddingContextOf(lm, this.contextSize, this.threads),
          signal,
          abortError,
        )
        const run = { truncate, contextSize: this.contextSize, signal, abortError }
        const { embeddings, promptTokens } = await embedTexts(lm, ctx, texts, run)
        return { embeddings, promptTokens, totalMs: performance.now() - started, loadMs }
      } catch (err) {
        throw this.lifetimes.toMeshError(err, signal)
      } finally {
        models.unlease(lm)
      }
    })
  }

  /**
   * Shared frame of chat and generate: lease the model, wait for a sequence,
   * run what `producer` makes. `producer` null (or num_predict 0) only loads the model.
   */
  private generation(
    model: string,
    plan: SamplingPlan,
    cb: GenerateCallbacks,
    producer: ((grammars: GrammarCache) => Producer) | null,
  ): Promise<GenerationResult> {
    if (typeof cb !== 'object' || cb === null) throw MeshError.badRequest('callbacks must be an object')
    const { onToken, onDelta } = cb
    checkOnToken(onToken)
    if (onDelta !== undefined && typeof onDelta !== 'function')
      throw MeshError.badRequest('onDelta must be a function')
    const produce = producer && this.grammars ? producer(this.grammars) : null

    return this.track(signalOf(cb), async (signal, models) => {
      const started = performance.now()
      const lm = await models.lease(model, signal)
      const loadMs = performance.now() - started
      try {
        if (produce === null || plan.maxTokens === 0) {
          return emptyResult(produce === null ? 'stop' : 'length', performance.now() - started, loadMs)
        }
        const abortError = () => this.lifetimes.abortError()
        const seq = await lm.sequences.acquire(signal, abortError)
        let failed = false
        try {
          const run = { signal, onToken, onDelta, started, loadMs, abortError }
          return await runGeneration(seq, lm, produce, run)
        } catch (err) {
          failed = true
          throw err
        } finally {
          // After a failure the KV state may not match the tokens node-llama-cpp believes are there.
          if (failed) await seq.clearHistory().catch(() => {})
          lm.sequences.release(seq)
        }
      } catch (err) {
        throw this.lifetimes.toMeshError(err, signal)
      } finally {
        models.unlease(lm)
      }
    })
  }

  /** Runs a request under the backend's lifetime. @throws ERR_BACKEND_UNAVAILABLE when not open or closed */
  private track<T>(
    userSignal: AbortSignal | undefined,
    fn: (signal: AbortSignal, models: LoadedModels) => Promise<T>,
  ): Promise<T> {
    const models = this.models
    if (!models && !this.lifetimes.closed) {
      return Promise.reject(MeshError.backendUnavailable('llama.cpp backend is not open'))
    }
    return this.lifetimes.run(userSignal, (signal) => fn(signal, models!))
  }
}
