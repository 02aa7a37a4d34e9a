import type { Backend } from '../../facilities/backends/types.js'
import type { MethodTable } from '../../facilities/net/rpc-server.js'
import { MeshError } from '../../kernel/errors.js'
import { isRecord } from '../../kernel/util.js'
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

/** What a model operation names: `model`, and `destination` (copy) or `keepAliveMs` (load). */
export interface ModelOp {
  model: string
  destination?: string
  keepAliveMs?: number
}

/** @throws ERR_BAD_REQUEST */
export function parseModelOp(payload: unknown, op: 'remove' | 'copy' | 'load' | 'unload'): ModelOp {
  const p = isRecord(payload) ? payload : {}
  if (typeof p.model !== 'string' || p.model === '') throw MeshError.badRequest('model: a model name')
  const out: ModelOp = { model: p.model }
  if (op === 'copy') {
    if (typeof p.destination !== 'string' || p.destination === '')
      throw MeshError.badRequest('destination: the new model name')
    out.destination = p.destination
  }
  if (op === 'load' && p.keepAliveMs !== undefined && p.keepAliveMs !== null) {
    if (typeof p.keepAliveMs !== 'number' || !Number.isFinite(p.keepAliveMs))
      throw MeshError.badRequest('keepAliveMs: milliseconds (negative: until unloaded)')
    out.keepAliveMs = p.keepAliveMs
  }
  return out
}

/**
 * The model administration RPCs of a processor. Like every processor RPC they are callable only
 * by the gateways its firewall admits (trusted by configuration, the mesh secret's, or vouched
 * for): the gateway checks the caller is an admin before it forwards a change.
 */
export function modelAdminMethods(backend: () => Backend, changed: () => void): MethodTable {
  const change = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn()
    } finally {
      changed()
    }
  }
  return {
    modelInventory: async () => {
      const b = backend()
      const [models, running] = await Promise.all([b.listModels(), b.runningModels()])
      return { backend: b.kind, models: heldModels(models, running) }
    },
    modelRemove: async (payload) => {
      const { model } = parseModelOp(payload, 'remove')
      await change(() => backend().deleteModel(model))
      return { removed: true }
    },
    modelCopy: async (payload) => {
      const { model, destination } = parseModelOp(payload, 'copy')
      await change(() => backend().copyModel(model, destination as string))
      return { copied: true }
    },
    modelLoad: async (payload) => {
      const { model, keepAliveMs } = parseModelOp(payload, 'load')
      await backend().loadModel(model, keepAliveMs)
      return { loaded: true }
    },
    modelUnload: async (payload) => ({
      unloaded: await backend().unloadModel(parseModelOp(payload, 'unload').model),
    }),
  }
}
