import type { Identity } from '../../facilities/auth/identity.js'
import { MeshError } from '../../kernel/errors.js'
import { baseModel } from '../../kernel/inference.js'

/**
 * What a caller's key lets it see and use: a key restricted to some models (`models` on the
 * key) lists only those (`/api/tags`, `/api/ps`, `/v1/models`, RPC `models` and `ps`) and may
 * use or show only those; a key without the restriction, a token, and a gateway without
 * accounts (`identity` null) see everything. `:latest` or not, a name is the same model.
 */
export function mayUse(identity: Identity | null, model: string): boolean {
  const allowed = identity?.models
  if (!allowed) return true
  const base = baseModel(model)
  return allowed.some((m) => baseModel(m) === base)
}

/** @throws ERR_FORBIDDEN when the caller's key may not use `model` */
export function requireUsable(identity: Identity | null, model: string): void {
  if (!mayUse(identity, model)) {
    throw new MeshError('ERR_FORBIDDEN', `this API key may not use model '${model}'`, { model })
  }
}

/** `models` without those the caller's key may not use. */
export function visibleTo<M extends { name: string }>(identity: Identity | null, models: M[]): M[] {
  return identity?.models ? models.filter((m) => mayUse(identity, m.name)) : models
}
