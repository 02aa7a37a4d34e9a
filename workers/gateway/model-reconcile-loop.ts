/**
 * The desired-state loop (docs/operations.md "Desired state"): every `models.reconcileMs`, and
 * soon after a processor joins, restarts, becomes unreachable or is dropped, the gateway asks
 * its processors what they hold and have loaded (the inventory), plans (model-reconciler.ts)
 * and starts the actions: a copy is a pull onto the processor from a holder of the mesh
 * (GatewayModelPull, no `source`), a load is the processor's `modelLoad` with no keep-alive
 * expiry (a model kept loaded by desired state stays until unloaded).
 *
 * At most one copy per model runs at a time, and `models.maxCopies` in all; loads run at once
 * (one per model and processor). An action that fails backs off for its (model, processor):
 * from `reconcileMs` (1 s at least), doubled on each failure up to BACKOFF_MAX_MS; the
 * planner then picks another processor if one fits. Decisions are logged: each action's start
 * and outcome, and a shortfall that cannot be planned once when it changes.
 */
import type { Logger } from '../../facilities/log.facility.js'
import type { NetFacility } from '../../facilities/net/net.facility.js'
import type { ProcessorEntry, RouterFacility } from '../../facilities/router/router.facility.js'
import { CancelToken } from '../../kernel/cancel.js'
import { MeshError } from '../../kernel/errors.js'
import { baseModel } from '../../kernel/inference.js'
import type { Answer } from './model-inventory.js'
import { loadOn } from './model-ops.js'
import { copyOnto, type GatewayModelPull } from './model-pull.js'
import {
  type DesiredModel,
  type HeldFact,
  type PlannedAction,
  type ProcessorFacts,
  pairKey,
  planReconcile,
  type Unmet,
} from './model-reconciler.js'

/** Longest back-off of a (model, processor) after failures. */
export const BACKOFF_MAX_MS = 5 * 60_000
/** How soon after a processor joins or leaves the loop runs. */
const KICK_MS = 250
/** The router's events after which the loop runs soon. */
const KICK_EVENTS = ['added', 'restarted', 'unreachable', 'drop'] as const

export interface ReconcileLoopOptions {
  reconcileMs: number
  maxCopies: number
  router: () => RouterFacility
  net: () => NetFacility
  log: () => Logger
  /** Every processor's inventory (ModelInventory.gather). */
  gather: () => Promise<Answer[]>
  /** Copies: a pull with no source onto one processor. */
  pull: Pick<GatewayModelPull, 'run'>
  desired: () => DesiredModel[]
}

/** The planner's view of the processors, from their inventory answers and the router's entries. */
export function factsOf(answers: Answer[], live: ProcessorEntry[]): ProcessorFacts[] {
  const entries = new Map(live.map((e) => [e.id, e]))
  return answers.map(({ view, models }) => {
    const entry = entries.get(view.processor)
    const answered = view.error === undefined
    const held = new Map<string, HeldFact>()
    if (answered) for (const m of models) held.set(baseModel(m.name), { name: m.name, loaded: m.loaded })
    // No answer: what routing knows it serves still counts as held (not as loaded).
    else for (const name of entry?.models ?? []) held.set(baseModel(name), { name, loaded: false })
    return {
      key: view.processor,
      state: view.state,
      backend: view.backend ?? entry?.backend ?? '',
      answered,
      held,
      load: entry ? entry.active + entry.queued : 0,
    }
  })
}

/** A (model, processor) left alone after failures, and the last one's error. */
export interface BackingOff {
  kind: PlannedAction['kind']
  model: string
  processor: string
  failures: number
  until: number
  error: { code: string; message: string }
}

const actionKey = (a: PlannedAction) => `${a.kind}\u0000${pairKey(a.model, a.processor)}`

export class ReconcileLoop {
  private timer: NodeJS.Timeout | null = null
  private running: Promise<void> | null = null
  private again = false
  /** Actions ended so far: a round whose facts were gathered across an end plans again. */
  private finished = 0
  private stopped = true
  private readonly pending = new Map<string, PlannedAction>()
  private readonly backoff = new Map<string, BackingOff>()
  private readonly cancels = new Set<CancelToken>()
  /** The last shortfall logged per model, so an unchanged one is not logged every round. */
  private readonly unmetLogged = new Map<string, string>()
  private readonly kicker = () => this.kick()
  private router: RouterFacility | null = null

  constructor(private readonly opts: ReconcileLoopOptions) {}

  /** Runs now, then every `reconcileMs`, and soon after processors join or leave. */
  start(): void {
    this.stopped = false
    this.router = this.opts.router()
    for (const e of KICK_EVENTS) this.router.events.on(e, this.kicker)
    this.schedule(0)
  }

  /** Stops the loop and cancels the copies under way (a load under way ends on its own). */
  stop(): Promise<void> {
    this.stopped = true
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
    for (const e of KICK_EVENTS) this.router?.events.off(e, this.kicker)
    for (const c of this.cancels) c.abort()
    return this.running ?? Promise.resolve()
  }

  /** A round soon (desired state changed, a processor came or went, an action ended). */
  kick(delayMs = KICK_MS): void {
    if (this.stopped) return
    if (this.running) this.again = true
    else this.schedule(delayMs)
  }

  /** Actions under way. */
  get underWay(): PlannedAction[] {
    return [...this.pending.values()]
  }

  /** What failed and is backing off (or was, until it succeeds). */
  get failing(): BackingOff[] {
    return [...this.backoff.values()]
  }

  private schedule(delayMs: number): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = setTimeout(() => {
      this.timer = null
      this.running = this.round().finally(() => {
        this.running = null
        if (this.stopped) return
        const again = this.again
        this.again = false
        this.schedule(again ? KICK_MS : this.opts.reconcileMs)
      })
    }, delayMs)
    this.timer.unref()
  }

  private async round(): Promise<void> {
    const desired = this.opts.desired()
    if (desired.length === 0) return
    try {
      const finishedBefore = this.finished
      const answers = await this.opts.gather()
      if (this.stopped) return
      // An action that ended while the processors were asked is in neither `pending` nor (maybe)
      // the answers: planning now could do it twice. The round after it plans from fresh facts.
      if (this.finished !== finishedBefore) {
        this.again = true
        return
      }
      const processors = factsOf(answers, this.opts.router().live())
      this.forget(desired, processors)
      const now = Date.now()
      const plan = planReconcile({
        desired,
        processors,
        pending: this.underWay,
        avoid: (model, processor) => (this.backoff.get(pairKey(model, processor))?.until ?? 0) > now,
      })
      this.logUnmet(desired, plan.unmet)
      for (const action of plan.actions) this.begin(action)
    } catch (err) {
      this.opts.log().warn({ err: MeshError.from(err).message }, 'desired state: a round failed')
    }
  }

  /** Drops the back-offs of models no longer desired and of processors no longer known. */
  private forget(desired: DesiredModel[], processors: ProcessorFacts[]): void {
    const models = new Set(desired.map((d) => baseModel(d.model)))
    const keys = new Set(processors.map((p) => p.key))
    for (const [pair, b] of this.backoff) {
      if (!models.has(baseModel(b.model)) || !keys.has(b.processor)) this.backoff.delete(pair)
    }
  }

  private logUnmet(desired: DesiredModel[], unmet: Unmet[]): void {
    for (const d of desired) {
      const mine = unmet.filter((u) => u.model === d.model)
      const text = mine.map((u) => `${u.kind} ${u.missing}: ${u.why}`).join('; ')
      if ((this.unmetLogged.get(d.model) ?? '') === text) continue
      this.unmetLogged.set(d.model, text)
      if (text) this.opts.log().info({ model: d.model, unmet: mine }, `desired state: short of ${text}`)
    }
    const names = new Set(desired.map((d) => d.model))
    for (const m of this.unmetLogged.keys()) if (!names.has(m)) this.unmetLogged.delete(m)
  }

  /** Starts `action` unless the limits say wait (one copy per model, `maxCopies` in all). */
  private begin(action: PlannedAction): void {
    if (this.stopped) return
    if (action.kind === 'copy') {
      const copies = this.underWay.filter((a) => a.kind === 'copy')
      if (copies.length >= this.opts.maxCopies) return
      if (copies.some((a) => baseModel(a.model) === baseModel(action.model))) return
    }
    const key = actionKey(action)
    if (this.pending.has(key)) return
    this.pending.set(key, action)
    const log = this.opts.log()
    log.info({ model: action.model, processor: action.processor }, `desired state: ${action.kind} starts`)
    const started = Date.now()
    const work = action.kind === 'copy' ? this.copy(action) : this.load(action)
    work.then(
      () => {
        this.backoff.delete(pairKey(action.model, action.processor))
        const ms = Date.now() - started
        log.info(
          { model: action.model, processor: action.processor, ms },
          `desired state: ${action.kind} done`,
        )
      },
      (err) => this.failed(action, MeshError.from(err)),
    )
    work
      .catch(() => {})
      .finally(() => {
        this.pending.delete(key)
        this.finished++
        this.kick()
      })
  }

  private failed(action: PlannedAction, err: MeshError): void {
    const pair = pairKey(action.model, action.processor)
    const failures = (this.backoff.get(pair)?.failures ?? 0) + 1
    const base = Math.max(1_000, this.opts.reconcileMs)
    const delayMs = Math.min(BACKOFF_MAX_MS, base * 2 ** (failures - 1))
    const { model, processor, kind } = action
    const error = { code: err.code, message: err.reason }
    this.backoff.set(pair, { kind, model, processor, failures, until: Date.now() + delayMs, error })
    const facts = { model, processor, code: err.code, err: err.reason, failures, delayMs }
    this.opts.log().warn(facts, `desired state: ${kind} failed; that processor is left alone for a while`)
  }

  /** A pull onto the processor from a holder of the mesh. @throws the processor's error */
  private async copy(action: PlannedAction): Promise<void> {
    const cancel = new CancelToken()
    this.cancels.add(cancel)
    try {
      await copyOnto(this.opts.pull, action.processor, action.name, cancel)
    } finally {
      this.cancels.delete(cancel)
    }
  }

  /** The processor's `modelLoad`, kept loaded until unloaded. */
  private async load(action: PlannedAction): Promise<void> {
    await loadOn(this.opts.net(), Buffer.from(action.processor, 'hex'), action.name, -1)
  }
}
