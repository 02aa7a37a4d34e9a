import type { Backend } from '../../facilities/backends/types.js'
import type { MethodTable } from '../../facilities/net/rpc-server.js'
import type { ModelInfo, RunningModel } from '../../kernel/wire.js'

/** One model a processor holds, as its `modelInventory` RPC lists it. */
export interface HeldModel {
  name: string
  size: number
  /** sha256 of the file's content (llama.cpp), or the backend's own digest (Ollama's manifest). */
  digest: string
  format: string
  quantization: string
  family: string
  parameterSize: string
  modifiedAt: string
  /** In memory now (the backend's running models). */
  loaded: boolean
  /** While loaded: when its keep-alive lets it go (ISO 8601), and the memory it takes. */
  expiresAt?: string
  sizeVram?: number
}

/** What a processor holds, with each model's loaded state, from its backend's listing and running models. */
export function heldModels(models: ModelInfo[], running: RunningModel[]): HeldModel[] {
  const loaded = new Map(running.map((r) => [r.name, r]))
  return models.map((m) => {
    const r = loaded.get(m.name)
    return {
      name: m.name,
      size: m.size,
      digest: m.digest,
      format: m.details.format,
      quantization: m.details.quantizationLevel,
      family: m.details.family,
      parameterSize: m.details.parameterSize,
      modifiedAt: m.modifiedAt,
      loaded: r !== undefined,
      ...(r ? { expiresAt: r.expiresAt, sizeVram: r.sizeVram } : {}),
    }
  })
}

/**
 * The model administration RPCs of a processor. Like every processor RPC they are callable only
 * by the gateways its firewall admits (trusted by configuration, the mesh secret's, or vouched
 * for): the gateway checks the caller is an admin where the RPC changes something.
 */
export function modelAdminMethods(backend: () => Backend): MethodTable {
  return {
    modelInventory: async () => {
      const b = backend()
      const [models, running] = await Promise.all([b.listModels(), b.runningModels()])
      return { backend: b.kind, models: heldModels(models, running) }
    },
  }
}
