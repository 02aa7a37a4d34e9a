import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { BackendConfig } from '../../kernel/config.js'
import { MeshError } from '../../kernel/errors.js'
import { Facility } from '../facility.js'
import type { Logger } from '../log.facility.js'
import { TINY_MODEL_NAME, writeTinyModel } from '../tiny-model/tiny-model.js'
import { EchoBackend } from './echo.backend.js'
import { probeOllama } from './ollama/client.js'
import { OllamaBackend } from './ollama/ollama.backend.js'
import type { Backend } from './types.js'

const OLLAMA_PROBE_TIMEOUT_MS = 1_000

export interface BackendFacilityOptions {
  config: BackendConfig
  /** Folder of GGUF files when `config.modelsDir` is not set. */
  defaultModelsDir: string
  logger: Logger
  /** Told each time a model loads (llama.cpp), with how long it took and its name. */
  onModelLoad?: (seconds: number, model: string) => void
}

/** What was chosen and why, for logs, `status` and `up`'s banner. */
export interface BackendChoice {
  kind: Backend['kind']
  reason: string
  where: string
}

async function ggufFiles(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).filter((f) => f.endsWith('.gguf'))
  } catch {
    return []
  }
}

/**
 * Picks and opens the processor's engine. `auto`: Ollama if it answers at
 * `ollamaHost`, else llama.cpp over the GGUF files in the models folder, else
 * (when allowed) the tiny test model written on first run.
 */
export class BackendFacility extends Facility {
  readonly name = 'backend'
  private readonly config: BackendConfig
  private readonly modelsDir: string
  private readonly log: Logger
  private readonly onModelLoad: ((seconds: number, model: string) => void) | undefined
  private current: Backend | null = null
  choice: BackendChoice | null = null

  constructor(opts: BackendFacilityOptions) {
    super()
    const { config, defaultModelsDir, logger, onModelLoad } = opts
    this.config = config
    this.onModelLoad = onModelLoad
    this.modelsDir = config.modelsDir ?? defaultModelsDir
    this.log = logger
  }

  get backend(): Backend {
    if (!this.current) throw new MeshError('ERR_BACKEND_UNAVAILABLE', 'backend is not open')
    return this.current
  }

  /**
   * The llama.cpp backend, its module loaded only here: node-llama-cpp costs ~0.5 s of CPU to
   * load, which every other process (a gateway, the CLI, an Ollama or echo processor) skips.
   */
  private async llamaCpp(): Promise<Backend> {
    const { LlamaCppBackend } = await import('./llamacpp/llamacpp.backend.js')
    return new LlamaCppBackend({
      modelsDir: this.modelsDir,
      threads: this.config.threads,
      gpu: this.config.gpu,
      contextSize: this.config.contextSize,
      maxParallel: this.config.maxParallel,
      ...(this.onModelLoad ? { onModelLoad: this.onModelLoad } : {}),
    })
  }

  protected override async _open(): Promise<void> {
    const choice = await this.choose()
    const backend: Backend =
      choice.kind === 'echo'
        ? new EchoBackend()
        : choice.kind === 'ollama'
          ? new OllamaBackend({ host: this.config.ollamaHost })
          : await this.llamaCpp()
    try {
      await backend.open()
    } catch (err) {
      await backend.close().catch(() => {})
      throw err
    }
    this.current = backend
    this.choice = choice
    this.log.info(choice, `backend: ${choice.kind} (${choice.reason})`)
  }

  private async choose(): Promise<BackendChoice> {
    const { type, ollamaHost, tinyModelFallback } = this.config
    if (type === 'echo') return { kind: 'echo', reason: 'configured (instant test backend)', where: '-' }
    if (type === 'ollama') return { kind: 'ollama', reason: 'configured', where: ollamaHost }
    if (type === 'auto' && (await probeOllama(ollamaHost, OLLAMA_PROBE_TIMEOUT_MS))) {
      return { kind: 'ollama', reason: `Ollama answers at ${ollamaHost}`, where: ollamaHost }
    }
    const files = await ggufFiles(this.modelsDir)
    if (files.length > 0) {
      const reason =
        type === 'auto' ? `no Ollama at ${ollamaHost}; ${files.length} GGUF file(s)` : 'configured'
      return { kind: 'llamacpp', reason, where: this.modelsDir }
    }
    if (type === 'llamacpp') {
      // Chosen by name: an empty folder is a machine waiting for models (a pull, a mesh copy).
      const reason = `configured; no GGUF files in ${this.modelsDir} yet: serves none until one is pulled or copied`
      return { kind: 'llamacpp', reason, where: this.modelsDir }
    }
    if (!tinyModelFallback) {
      throw MeshError.badConfig(
        `no models: no Ollama at ${ollamaHost} and no .gguf files in ${this.modelsDir} (backend.modelsDir)`,
      )
    }
    const path = join(this.modelsDir, `${TINY_MODEL_NAME}.gguf`)
    await writeTinyModel(path)
    return {
      kind: 'llamacpp',
      reason: `no Ollama at ${ollamaHost} and no GGUF files; wrote the tiny TEST model ${TINY_MODEL_NAME} (not a real LLM)`,
      where: this.modelsDir,
    }
  }

  protected override async _close(): Promise<void> {
    await this.current?.close()
    this.current = null
  }
}
