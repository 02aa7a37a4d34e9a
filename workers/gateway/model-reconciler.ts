/**
 * Desired state's planning (docs/operations.md "Desired state"): from what admins asked for
 * each model (`replicas`: at least that many processors hold it; `loaded`: at least that many
 * have it in memory) and what each processor holds and has loaded, the actions that close the
 * gap: copy the model onto a processor, or load it on one that holds it. A pure function: the
 * loop that gathers the facts and runs the actions is model-reconcile-loop.ts.
 *
 * Rules:
 * - Only serving processors count, and only serving processors that answered the inventory are
 *   acted on: never a draining or unreachable one (a draining processor is leaving: its copy
 *   does not count toward the minimum), never one whose holdings are unknown.
 * - Never more than needed: actions under way count as done, and a model's shortfall is planned
 *   at most (fewer when there are not enough candidates: the rest is reported unmet).
 * - A copy goes to a processor of the same backend as a holder (a GGUF to llama.cpp, an Ollama
 *   model to Ollama), and needs a reachable holder to copy from.
 * - Copies prefer processors holding fewer models, then the least loaded; loads prefer those
 *   with fewer models loaded, then the least loaded; ties by key, so a plan is deterministic.
 * - Never removes or unloads: desired state is a minimum.
 */
import { baseModel } from '../../kernel/inference.js'
import type { ProcessorState } from '../../kernel/wire.js'

/** What admins asked for one model. */
export interface DesiredModel {
  model: string
  replicas: number
  /** Processors with it in memory, at least (absent: no minimum). */
  loaded?: number
}

/** A desired state as replies show it: `loaded` only when one was asked. */
export const publicDesired = (d: DesiredModel): { replicas: number; loaded?: number } => ({
  replicas: d.replicas,
  ...(d.loaded !== undefined ? { loaded: d.loaded } : {}),
})

/** One model a processor holds (its own name for it: Ollama's carry `:latest`). */
export interface HeldFact {
  name: string
  loaded: boolean
}

/** What the planner knows of one processor. */
export interface ProcessorFacts {
  key: string
  state: ProcessorState
  /** Its backend's kind: 'llamacpp', 'ollama', … */
  backend: string
  /** Whether it answered the inventory: what it holds and has loaded is known, and it may be acted on. */
  answered: boolean
  /** What it holds, by base model name (`x:latest` is `x`). */
  held: Map<string, HeldFact>
  /** Requests running and waiting on it. */
  load: number
}

export type ActionKind = 'copy' | 'load'

export interface PlannedAction {
  kind: ActionKind
  /** The desired model's name, as the admin gave it. */
  model: string
  /** The name to use on the processor (a holder's name for it). */
  name: string
  processor: string
}

/** A shortfall no action was planned for, and why. */
export interface Unmet {
  model: string
  kind: ActionKind
  missing: number
  why: string
}

export interface PlanInput {
  desired: DesiredModel[]
  processors: ProcessorFacts[]
  /** Actions under way: they count as done, and their processors are not chosen again for the model. */
  pending?: Pick<PlannedAction, 'kind' | 'model' | 'processor'>[]
  /** Whether to leave (model, processor) alone for now (backing off after a failure). */
  avoid?: (model: string, processor: string) => boolean
}

export interface Plan {
  actions: PlannedAction[]
  unmet: Unmet[]
}

/** The key of a (model, processor) pair: the model by its base name. */
export const pairKey = (model: string, processor: string) => `${baseModel(model)}\u0000${processor}`

const byKey = (a: ProcessorFacts, b: ProcessorFacts) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)

function loadedCount(p: ProcessorFacts): number {
  let n = 0
  for (const h of p.held.values()) if (h.loaded) n++
  return n
}

/** Orders by `first` (fewer first), then the least loaded, then by key. */
function preferring(first: (p: ProcessorFacts) => number) {
  return (a: ProcessorFacts, b: ProcessorFacts) => first(a) - first(b) || a.load - b.load || byKey(a, b)
}

interface ModelView {
  d: DesiredModel
  base: string
  holders: ProcessorFacts[]
  pending: Pick<PlannedAction, 'kind' | 'model' | 'processor'>[]
  avoid: (model: string, processor: string) => boolean
}

function planCopies(v: ModelView, all: ProcessorFacts[], plan: Plan): void {
  const copying = new Set(v.pending.filter((a) => a.kind === 'copy').map((a) => a.processor))
  const holderKeys = new Set(v.holders.map((h) => h.key))
  const missing = v.d.replicas - v.holders.length - [...copying].filter((k) => !holderKeys.has(k)).length
  if (missing <= 0) return
  const sources = all.filter((p) => p.state !== 'unreachable' && p.answered && p.held.has(v.base))
  const source = sources[0]?.held.get(v.base)
  if (!source) {
    plan.unmet.push({ model: v.d.model, kind: 'copy', missing, why: 'no reachable processor holds it' })
    return
  }
  const kinds = new Set(sources.map((p) => p.backend))
  const candidates = all
    .filter(
      (p) =>
        p.state === 'serving' &&
        p.answered &&
        !p.held.has(v.base) &&
        kinds.has(p.backend) &&
        !copying.has(p.key) &&
        !v.avoid(v.d.model, p.key),
    )
    .sort(preferring((p) => p.held.size))
  const chosen = candidates.slice(0, missing)
  for (const p of chosen)
    plan.actions.push({ kind: 'copy', model: v.d.model, name: source.name, processor: p.key })
  if (chosen.length < missing) {
    const why = `no other serving ${[...kinds].join('/')} processor to copy it to`
    plan.unmet.push({ model: v.d.model, kind: 'copy', missing: missing - chosen.length, why })
  }
}

function planLoads(v: ModelView, plan: Plan): void {
  const wanted = v.d.loaded ?? 0
  const loading = new Set(v.pending.filter((a) => a.kind === 'load').map((a) => a.processor))
  const isLoaded = (p: ProcessorFacts) => p.held.get(v.base)?.loaded === true
  const loadedNow = v.holders.filter((p) => isLoaded(p) || loading.has(p.key)).length
  const missing = wanted - loadedNow
  if (missing <= 0) return
  const candidates = v.holders
    .filter((p) => p.answered && !isLoaded(p) && !loading.has(p.key) && !v.avoid(v.d.model, p.key))
    .sort(preferring(loadedCount))
  const chosen = candidates.slice(0, missing)
  for (const p of chosen) {
    const name = p.held.get(v.base)?.name ?? v.d.model
    plan.actions.push({ kind: 'load', model: v.d.model, name, processor: p.key })
  }
  if (chosen.length < missing) {
    const why = 'not enough serving processors hold it (copies come first)'
    plan.unmet.push({ model: v.d.model, kind: 'load', missing: missing - chosen.length, why })
  }
}

/** The actions that bring each desired model to its minimums, and what cannot be planned yet. */
export function planReconcile(input: PlanInput): Plan {
  const plan: Plan = { actions: [], unmet: [] }
  const all = [...input.processors].sort(byKey)
  const avoid = input.avoid ?? (() => false)
  for (const d of input.desired) {
    const base = baseModel(d.model)
    const pending = (input.pending ?? []).filter((a) => baseModel(a.model) === base)
    const holders = all.filter((p) => p.state === 'serving' && p.held.has(base))
    const view: ModelView = { d, base, holders, pending, avoid }
    planCopies(view, all, plan)
    planLoads(view, plan)
  }
  return plan
}
