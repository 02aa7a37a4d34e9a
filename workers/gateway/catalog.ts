import type { Logger } from '../../facilities/log.facility.js'
import type { NetFacility } from '../../facilities/net/net.facility.js'
import type { RouterFacility } from '../../facilities/router/router.facility.js'
import { MeshError } from '../../kernel/errors.js'
import type { ModelDetails, ModelInfo, RunningModel } from '../../kernel/wire.js'

const MODELS_TIMEOUT_MS = 5_000

/** What the mesh serves, asked of its processors: models, model details, running models. */
export class Catalog {
  constructor(
    private readonly router: () => RouterFacility,
    private readonly net: () => NetFacility,
    private readonly log: () => Logger,
  ) {}

  /** Asks every live processor `method`; one that fails is logged and left out. */
  private async askAll<T>(method: string): Promise<T[]> {
    const replies = await Promise.all(
      this.router()
        .live()
        .map(async (entry) => {
          try {
            return await this.net()
              .peer(entry.publicKey)
              .request<T>(method, null, { timeout: MODELS_TIMEOUT_MS })
          } catch (err) {
            this.log().warn({ err, processor: entry.id }, `${method} failed`)
            return null
          }
        }),
    )
    return replies.filter((r): r is Awaited<T> => r !== null)
  }

  /**
   * Union of the models of live processors, each with how many of them hold it (`held`) and
   * how many have it loaded as of their last status (`loaded`).
   */
  async models(): Promise<ModelInfo[]> {
    const byName = new Map<string, ModelInfo>()
    for (const reply of await this.askAll<{ models?: ModelInfo[] }>('models')) {
      for (const m of reply.models ?? []) {
        const seen = byName.get(m.name)
        if (seen) seen.held = (seen.held ?? 0) + 1
        else byName.set(m.name, { ...m, held: 1, loaded: 0 })
      }
    }
    for (const e of this.router().live()) {
      for (const m of e.loaded ?? []) {
        const info = byName.get(m) ?? byName.get(`${m}:latest`)
        if (info) info.loaded = (info.loaded ?? 0) + 1
      }
    }
    return [...byName.values()].sort((a, b) => a.name.localeCompare(b.name))
  }

  /** Model details from a processor that serves it (any one: they read the same file). */
  async show(model: string): Promise<ModelDetails> {
    let serving = this.router().entriesFor(model)
    if (serving.length === 0) {
      await this.router().refresh()
      serving = this.router().entriesFor(model)
    }
    const answering = serving.filter((e) => e.state !== 'unreachable')
    const entry = answering.find((e) => e.breaker !== 'open') ?? answering[0]
    if (!entry) throw MeshError.modelNotFound(model)
    return this.net()
      .peer(entry.publicKey)
      .request<ModelDetails>('show', { model }, { timeout: MODELS_TIMEOUT_MS })
  }

  /**
   * Models loaded anywhere in the mesh (Ollama's /api/ps across it): one entry per model, with
   * how many processors have it loaded (`loaded`), the latest expiry, and their memory summed.
   */
  async runningModels(): Promise<RunningModel[]> {
    const byName = new Map<string, RunningModel>()
    for (const reply of await this.askAll<{ models?: RunningModel[] }>('ps')) {
      for (const m of reply.models ?? []) {
        const seen = byName.get(m.name)
        if (!seen) {
          byName.set(m.name, { ...m, loaded: 1 })
          continue
        }
        seen.loaded = (seen.loaded ?? 0) + 1
        seen.sizeVram += m.sizeVram
        if (m.expiresAt > seen.expiresAt) seen.expiresAt = m.expiresAt
      }
    }
    return [...byName.values()].sort((a, b) => a.name.localeCompare(b.name))
  }
}
