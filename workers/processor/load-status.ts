/**
 * What a processor tells gateways about its models' memory in `status`: the models it has
 * loaded now, and how long each took to load here (an EWMA of the measured loads), so the
 * gateway routes to loaded models first and weighs a cold start by what it really costs on
 * this machine (facilities/router/warmth.ts).
 */
import type { Backend } from '../../facilities/backends/types.js'
import { baseModel } from '../../kernel/inference.js'
import { ewma } from '../../kernel/util.js'

/** How long Ollama's `/api/ps` is reused for `status` (gateways ask every second). */
export const LOADED_CACHE_MS = 2_000

/** A generation's load time below this is a warm model's bookkeeping, not a load (Ollama reports a few ms). */
const MIN_COLD_LOAD_MS = 50

/** The part of `status` this module gives: loaded model names, and measured load times (ms). */
export interface LoadStatusInfo {
  loaded: string[]
  loadMs: Record<string, number>
}

/**
 * Loaded models (llama.cpp: read from memory each time; Ollama: its `/api/ps`, cached
 * LOADED_CACHE_MS) and load times per model. Never throws: a backend that cannot list what it
 * has loaded reports the last list it gave.
 */
export class LoadStatus {
  private cache: { at: number; loaded: string[] } | null = null
  private readonly times = new Map<string, number>()

  constructor(
    private readonly backend: () => Backend,
    private readonly now: () => number = Date.now,
  ) {}

  /** A load of `model` took `seconds` (llama.cpp's own measure of its file and context). */
  measured(seconds: number, model: string): void {
    const name = baseModel(model)
    const ms = Math.max(0, seconds * 1000)
    this.times.set(name, ewma(this.times.get(name) ?? null, ms) as number)
    // The loaded list changed: read it afresh for the next status.
    this.cache = null
  }

  /**
   * A generation of `model` answered after `loadMs` of loading: a cold start when the model was
   * not loaded (Ollama's `load_duration`; llama.cpp's loads are measured by `measured`).
   */
  answered(model: string, loadMs: number): void {
    const name = baseModel(model)
    const kind = this.safeKind()
    if (kind === 'llamacpp' || loadMs < MIN_COLD_LOAD_MS) return
    if (this.cache?.loaded.includes(name)) return
    this.measured(loadMs / 1000, name)
  }

  private safeKind(): string {
    try {
      return this.backend().kind
    } catch {
      return ''
    }
  }

  /** The models loaded now, by base name (`:latest` dropped), sorted. */
  async loaded(): Promise<string[]> {
    let backend: Backend
    try {
      backend = this.backend()
    } catch {
      return this.cache?.loaded ?? []
    }
    const now = this.now()
    const cached = backend.kind === 'ollama' && this.cache && now - this.cache.at < LOADED_CACHE_MS
    if (cached && this.cache) return this.cache.loaded
    try {
      const running = await backend.runningModels()
      const loaded = [...new Set(running.map((m) => baseModel(m.name)))].sort()
      this.cache = { at: now, loaded }
      return loaded
    } catch {
      return this.cache?.loaded ?? []
    }
  }

  /**
   * For `status`: loaded models, and load times rounded to the 10 ms (they change the status's
   * version). Nothing for an engine with nothing to load (echo): gateways treat it as always warm.
   */
  async info(): Promise<Partial<LoadStatusInfo>> {
    const kind = this.safeKind()
    if (kind !== 'llamacpp' && kind !== 'ollama') return {}
    const loadMs: Record<string, number> = {}
    for (const [name, ms] of this.times) loadMs[name] = Math.round(ms / 10) * 10
    return { loaded: await this.loaded(), loadMs }
  }
}
