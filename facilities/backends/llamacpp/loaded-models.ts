/**
 * The models in memory. A model loads on first use (one load shared by
 * concurrent callers) with one context of `maxParallel` sequences, and
 * unloads once no request has held it for `keepAliveMs`.
 */
import type { ChatWrapper, Llama, LlamaContext, LlamaEmbeddingContext, LlamaModel } from 'node-llama-cpp'
import { MeshError } from '../../../kernel/errors.js'
import { errorMessage } from '../../../kernel/util.js'
import type { ModelInfo, RunningModel } from '../../../kernel/wire.js'
import type { ModelFile } from './gguf-facts.js'
import { type ModelFolder, modelFileName } from './model-folder.js'
import { chatWrapperFor } from './prompting.js'
import { abortable, type RequestLifetimes } from './request-lifetime.js'
import { SequencePool } from './sequence-pool.js'
import { longestTokenChars } from './text-limits.js'

/** What `running()` shows for a model that never unloads (keepAliveMs < 0). */
const NEVER_EXPIRES = '9999-12-31T23:59:59.999Z'

export interface LoadedModel {
  name: string
  info: ModelInfo
  model: LlamaModel
  context: LlamaContext
  chatWrapper: ChatWrapper
  sequences: SequencePool
  embedding: Promise<LlamaEmbeddingContext> | null
  /**
   * Characters of text that can reach the context at most: `contextSize` tokens of the
   * vocabulary's longest. Longer text is cut before it is tokenized (see text-limits.ts).
   */
  maxInputChars: number
  /** Requests holding the model (waiting, generating or embedding); it never unloads under them. */
  users: number
  lastUsed: number
  idleTimer: NodeJS.Timeout | null
  unloaded: boolean
  /** Its own keep-alive (`model load --keep-alive`), else the backend's. */
  keepAliveMs: number | null
}

export interface LoadedModelsOptions {
  llama: Llama
  folder: ModelFolder
  lifetimes: RequestLifetimes
  contextSize: number
  maxParallel: number
  threads: number
  keepAliveMs: number
  /** Told each time a model loads, with how long it took (file and context) and its name. */
  onLoad?: (seconds: number, model: string) => void
}

export class LoadedModels {
  private readonly llama: Llama
  private readonly folder: ModelFolder
  private readonly lifetimes: RequestLifetimes
  private readonly contextSize: number
  private readonly maxParallel: number
  private readonly threads: number
  private readonly keepAliveMs: number
  private readonly onLoad: ((seconds: number, model: string) => void) | undefined
  private readonly loads = new Map<string, Promise<LoadedModel>>()
  private readonly loaded = new Map<string, LoadedModel>()

  constructor(opts: LoadedModelsOptions) {
    const { llama, folder, lifetimes, contextSize, maxParallel, threads, keepAliveMs } = opts
    this.llama = llama
    this.folder = folder
    this.lifetimes = lifetimes
    this.contextSize = contextSize
    this.maxParallel = maxParallel
    this.threads = threads
    this.keepAliveMs = keepAliveMs
    this.onLoad = opts.onLoad
  }

  /**
   * The loaded model for `name`, loading it if needed, with a use counted
   * against unloading. Pair with `unlease`.
   * @throws ERR_BAD_REQUEST, ERR_MODEL_NOT_FOUND, ERR_BACKEND_UNAVAILABLE, ERR_CANCELLED
   */
  async lease(name: string, signal: AbortSignal): Promise<LoadedModel> {
    for (;;) {
      // A loaded model is found without touching the disk, so requests reach the
      // sequence queue in the order they were made.
      let load = this.loads.get(modelFileName(name))
      if (!load) {
        const file = await this.folder.find(name)
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
      const lm = await abortable(load, signal, () => this.lifetimes.abortError())
      // An idle timer may have unloaded it between the load settling and this line.
      if (lm.unloaded) continue
      lm.users++
      if (lm.idleTimer) clearTimeout(lm.idleTimer)
      lm.idleTimer = null
      return lm
    }
  }

  unlease(lm: LoadedModel): void {
    lm.users--
    lm.lastUsed = Date.now()
    const keepAliveMs = lm.keepAliveMs ?? this.keepAliveMs
    if (lm.users > 0 || lm.unloaded || keepAliveMs < 0) return
    lm.idleTimer = setTimeout(() => {
      if (lm.users === 0) void this.unload(lm)
    }, keepAliveMs)
    lm.idleTimer.unref()
  }

  /** Loaded models and when they unload if left idle. */
  running(): RunningModel[] {
    const now = Date.now()
    return [...this.loaded.values()].map((lm) => {
      let expiresAt = NEVER_EXPIRES
      const keepAliveMs = lm.keepAliveMs ?? this.keepAliveMs
      if (keepAliveMs >= 0) {
        expiresAt = new Date((lm.users > 0 ? now : lm.lastUsed) + keepAliveMs).toISOString()
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
   * Loads `name` (if it is not) and keeps it for `keepAliveMs` idle from now (its own
   * keep-alive from then on; undefined: the backend's).
   * @throws ERR_BAD_REQUEST, ERR_MODEL_NOT_FOUND, ERR_BACKEND_UNAVAILABLE
   */
  async warm(name: string, keepAliveMs: number | undefined, signal: AbortSignal): Promise<void> {
    const lm = await this.lease(name, signal)
    if (keepAliveMs !== undefined) lm.keepAliveMs = keepAliveMs
    this.unlease(lm)
  }

  /** The model `name` in memory (`name:latest` too), if it is. @throws ERR_BAD_REQUEST, ERR_MODEL_NOT_FOUND for a path-like name */
  loadedAs(name: string): LoadedModel | undefined {
    return this.loaded.get(modelFileName(name))
  }

  /**
   * Unloads `name` now, when no request holds it; false when it was not loaded.
   * @throws ERR_CONFLICT while a request uses it
   */
  async unloadIdle(name: string): Promise<boolean> {
    const file = modelFileName(name)
    // A load under way finishes first, so it cannot land after the unload.
    await this.loads.get(file)?.catch(() => null)
    const lm = this.loaded.get(file)
    if (!lm) return false
    if (lm.users > 0) {
      throw new MeshError('ERR_CONFLICT', `model '${name}' is in use by ${lm.users} request(s)`, {
        model: name,
        users: lm.users,
      })
    }
    await this.unload(lm)
    return true
  }

  /** Waits for loads under way, then unloads every model. Call once no request runs. */
  async close(): Promise<void> {
    await Promise.allSettled([...this.loads.values()])
    for (const lm of [...this.loaded.values()]) await this.unload(lm)
  }

  private async load(file: ModelFile): Promise<LoadedModel> {
    if (this.lifetimes.closed) throw MeshError.backendUnavailable('llama.cpp backend is not open')
    const info = await this.folder.infoOf(file).catch((err: unknown) => {
      throw MeshError.backendUnavailable(`cannot read model '${file.name}': ${errorMessage(err)}`, err)
    })
    let model: LlamaModel
    const started = performance.now()
    try {
      model = await this.llama.loadModel({ modelPath: file.path })
    } catch (err) {
      throw MeshError.backendUnavailable(`cannot load model '${file.name}': ${errorMessage(err)}`, err)
    }
    try {
      const lm = await this.withContext(file.name, info, model)
      if (this.lifetimes.closed) throw MeshError.backendUnavailable('llama.cpp backend closed while loading')
      this.loaded.set(file.name, lm)
      this.onLoad?.((performance.now() - started) / 1000, file.name)
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

  private async withContext(name: string, info: ModelInfo, model: LlamaModel): Promise<LoadedModel> {
    const context = await model.createContext({
      contextSize: this.contextSize,
      sequences: this.maxParallel,
      threads: this.threads,
    })
    const free = Array.from({ length: this.maxParallel }, () => context.getSequence())
    return {
      name,
      info,
      model,
      context,
      chatWrapper: chatWrapperFor(model),
      maxInputChars: this.contextSize * longestTokenChars(model),
      sequences: new SequencePool(free),
      embedding: null,
      users: 0,
      lastUsed: Date.now(),
      idleTimer: null,
      unloaded: false,
      keepAliveMs: null,
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
    lm.sequences.rejectWaiters(() => MeshError.backendUnavailable(`model '${lm.name}' unloaded`))
    const embedding = await lm.embedding?.catch(() => null)
    await embedding?.dispose().catch(() => {})
    await lm.context.dispose().catch(() => {})
    await lm.model.dispose().catch(() => {})
  }
}
