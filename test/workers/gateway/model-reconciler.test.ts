/**
 * Desired state's planner (workers/gateway/model-reconciler.ts): a few exact cases, then
 * properties over many random meshes (a seeded generator: a failure names its seed): never
 * onto a draining, unreachable or silent processor; never more than the shortfall, exactly the
 * shortfall when there are enough candidates; never a copy to a holder or a load on a processor
 * without the model; preferring processors with fewer models.
 */
import test from 'brittle'
import { baseModel } from '../../../kernel/inference.js'
import type { ProcessorState } from '../../../kernel/wire.js'
import {
  type DesiredModel,
  type HeldFact,
  type PlannedAction,
  type ProcessorFacts,
  planReconcile,
} from '../../../workers/gateway/model-reconciler.js'

function proc(
  key: string,
  held: Record<string, boolean>,
  extra: Partial<ProcessorFacts> = {},
): ProcessorFacts {
  const map = new Map<string, HeldFact>()
  for (const [name, loaded] of Object.entries(held)) map.set(baseModel(name), { name, loaded })
  return { key, state: 'serving', backend: 'llamacpp', answered: true, held: map, load: 0, ...extra }
}

const brief = (actions: PlannedAction[]) => actions.map((a) => `${a.kind} ${a.model} ${a.processor}`).sort()

test('planner: copies the shortfall to the emptiest serving processors of the same backend', (t) => {
  const plan = planReconcile({
    desired: [{ model: 'tiny', replicas: 3 }],
    processors: [
      proc('a', { tiny: false }),
      proc('b', { x: false, y: false }),
      proc('c', {}),
      proc('d', {}, { state: 'draining' }),
      proc('e', {}, { state: 'unreachable', answered: false }),
      proc('f', {}, { backend: 'ollama' }),
      proc('g', { z: false }),
    ],
  })
  t.alike(brief(plan.actions), ['copy tiny c', 'copy tiny g'], 'the two with fewest models, not d, e or f')
  t.alike(plan.unmet, [])
  t.is(plan.actions[0]?.name, 'tiny', "the holder's name for it")
})

test('planner: loads where held and not loaded, fewest loaded first; counts what is under way', (t) => {
  const processors = [
    proc('a', { tiny: true }),
    proc('b', { tiny: false, x: true }),
    proc('c', { tiny: false }),
    proc('d', { tiny: false }, { state: 'draining' }),
  ]
  const desired: DesiredModel[] = [{ model: 'tiny', replicas: 3, loaded: 2 }]
  t.alike(brief(planReconcile({ desired, processors }).actions), ['load tiny c'], 'c: nothing loaded yet')
  const pending = [{ kind: 'load' as const, model: 'tiny', processor: 'c' }]
  t.alike(planReconcile({ desired, processors, pending }).actions, [], 'a load under way counts')
  const avoid = (_m: string, p: string) => p === 'c'
  t.alike(brief(planReconcile({ desired, processors, avoid }).actions), ['load tiny b'], 'c backs off: b')
  const four = planReconcile({ desired: [{ model: 'tiny', replicas: 4, loaded: 4 }], processors })
  t.alike(brief(four.actions), ['load tiny b', 'load tiny c'])
  t.alike(
    four.unmet.map((u) => [u.kind, u.missing]),
    [
      ['copy', 1],
      ['load', 1],
    ],
    'the draining holder neither counts nor is a candidate: one short of each',
  )
})

test('planner: nothing to copy from, a name with :latest, and satisfied models', (t) => {
  const none = planReconcile({ desired: [{ model: 'ghost', replicas: 1 }], processors: [proc('a', {})] })
  t.alike(none.actions, [])
  t.alike(none.unmet, [{ model: 'ghost', kind: 'copy', missing: 1, why: 'no reachable processor holds it' }])
  const ollama = planReconcile({
    desired: [{ model: 'llama3', replicas: 2 }],
    processors: [
      proc('a', { 'llama3:latest': false }, { backend: 'ollama' }),
      proc('b', {}, { backend: 'ollama' }),
    ],
  })
  t.alike(ollama.actions, [{ kind: 'copy', model: 'llama3', name: 'llama3:latest', processor: 'b' }])
  const done = planReconcile({
    desired: [{ model: 'tiny', replicas: 1, loaded: 1 }],
    processors: [proc('a', { tiny: true }), proc('b', {})],
  })
  t.alike(done, { actions: [], unmet: [] }, 'met: nothing to do')
})

/** mulberry32: a small seeded generator, so a failing case can be replayed from its seed. */
function rng(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let x = Math.imul(s ^ (s >>> 15), 1 | s)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

const MODELS = ['m0', 'm1', 'm2:latest', 'm3']
const STATES: ProcessorState[] = ['serving', 'serving', 'serving', 'draining', 'unreachable']

function randomMesh(seed: number) {
  const r = rng(seed)
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)] as T
  const n = 1 + Math.floor(r() * 8)
  const processors: ProcessorFacts[] = []
  for (let i = 0; i < n; i++) {
    const state = pick(STATES)
    const held: Record<string, boolean> = {}
    for (const m of MODELS) if (r() < 0.35) held[m] = r() < 0.5
    processors.push(
      proc(`p${i}`, held, {
        state,
        backend: r() < 0.8 ? 'llamacpp' : 'ollama',
        answered: state !== 'unreachable' && r() < 0.9,
        load: Math.floor(r() * 4),
      }),
    )
  }
  const desired: DesiredModel[] = []
  for (const m of MODELS) {
    if (r() < 0.3) continue
    const replicas = Math.floor(r() * 6)
    const loaded = r() < 0.6 ? Math.floor(r() * (replicas + 1)) : undefined
    desired.push(
      loaded === undefined ? { model: baseModel(m), replicas } : { model: baseModel(m), replicas, loaded },
    )
  }
  return { processors, desired }
}

const CASES = 3000

test('planner properties over random meshes', (t) => {
  let copies = 0
  let loads = 0
  for (let seed = 1; seed <= CASES; seed++) {
    const { processors, desired } = randomMesh(seed)
    const plan = planReconcile({ desired, processors })
    const byKey = new Map(processors.map((p) => [p.key, p]))
    const problem = check(plan.actions, plan.unmet, desired, processors, byKey)
    if (problem) {
      t.fail(`seed ${seed}: ${problem}`)
      return
    }
    copies += plan.actions.filter((a) => a.kind === 'copy').length
    loads += plan.actions.filter((a) => a.kind === 'load').length
  }
  t.pass(`${CASES} random meshes: ${copies} copies and ${loads} loads planned, every property held`)
  t.ok(copies > 100 && loads > 100, 'the cases exercise both kinds')
})

/** The first property `plan` breaks, or null. */
function check(
  actions: PlannedAction[],
  unmet: { model: string; kind: string; missing: number }[],
  desired: DesiredModel[],
  processors: ProcessorFacts[],
  byKey: Map<string, ProcessorFacts>,
): string | null {
  const seen = new Set<string>()
  for (const a of actions) {
    const p = byKey.get(a.processor)
    if (p?.state !== 'serving' || !p.answered) return `${a.kind} onto non-live ${a.processor}`
    const key = `${a.kind} ${a.model} ${a.processor}`
    if (seen.has(key)) return `twice: ${key}`
    seen.add(key)
    const holds = p.held.get(baseModel(a.model))
    if (a.kind === 'copy' && holds) return `copy onto a holder: ${key}`
    if (a.kind === 'load' && (!holds || holds.loaded)) return `load where not held or loaded: ${key}`
  }
  for (const d of desired) {
    const base = baseModel(d.model)
    const serving = processors.filter((p) => p.state === 'serving')
    const holders = serving.filter((p) => p.held.has(base))
    const sources = processors.filter((p) => p.state !== 'unreachable' && p.answered && p.held.has(base))
    const kinds = new Set(sources.map((p) => p.backend))
    const candidates = serving.filter((p) => p.answered && !p.held.has(base) && kinds.has(p.backend))
    const copyShort = Math.max(0, d.replicas - holders.length)
    const planned = actions.filter((a) => a.kind === 'copy' && a.model === d.model)
    const want = Math.min(copyShort, sources.length ? candidates.length : 0)
    if (planned.length !== want) return `${d.model}: ${planned.length} copies for a shortfall of ${want}`
    const missed = unmet.find((u) => u.model === d.model && u.kind === 'copy')?.missing ?? 0
    if (missed !== copyShort - want) return `${d.model}: unmet copies ${missed}, expected ${copyShort - want}`
    const chosen = new Set(planned.map((a) => a.processor))
    const most = Math.max(-1, ...[...chosen].map((k) => byKey.get(k)?.held.size ?? 0))
    if (candidates.some((c) => !chosen.has(c.key) && c.held.size < most))
      return `${d.model}: a fuller processor chosen over an emptier one`
    const loadedNow = holders.filter((p) => p.held.get(base)?.loaded).length
    const loadable = holders.filter((p) => p.answered && !p.held.get(base)?.loaded).length
    const loadShort = Math.max(0, (d.loaded ?? 0) - loadedNow)
    const loads = actions.filter((a) => a.kind === 'load' && a.model === d.model).length
    if (loads !== Math.min(loadShort, loadable))
      return `${d.model}: ${loads} loads for a shortfall of ${loadShort}`
  }
  return null
}
