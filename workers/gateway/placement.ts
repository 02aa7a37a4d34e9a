/**
 * Placement that follows demand (`placement` in the gateway's config; `llm-mesh up` turns it
 * on). Every `intervalMs` the gateway looks at its queue: when requests for a model have waited
 * longer than `queueWaitMs` at every look for `windowMs` (placement-demand.ts), it loads the
 * model (`modelLoad`, for `keepAliveMs` idle) on an idle processor that holds it but has not
 * loaded it; when none does and `copy` is on, it copies the model onto an idle llama.cpp
 * processor from a holder in the mesh (GatewayModelPull) and loads it there. One action per
 * model per `cooldownMs` (doubled after each failure). A model left idle past its keep-alive is
 * unloaded by its processor, whose `status` then says so: routing follows.
 *
 * Each decision is logged, and counted in `llm_mesh_gateway_placements_total{action,outcome}`.
 */
import { Counter, type Registry } from 'prom-client'
import { Facility } from '../../facilities/facility.js'
import type { ProcessorEntry } from '../../facilities/router/processor-entry.js'
import type { ModelWaiting } from '../../facilities/router/router.facility.js'
import { CancelToken } from '../../kernel/cancel.js'
import type { PlacementConfig } from '../../kernel/config.js'
import { MeshError } from '../../kernel/errors.js'
import { baseModel } from '../../kernel/inference.js'
import type { FacilitySpec } from '../base.worker.js'
import { loadOn } from './model-ops.js'
import { copyOnto, type ModelPullingGateway } from './model-pull.js'
import { copyTarget, DemandTracker, loadTarget } from './placement-demand.js'

/** How long closing waits for actions under way. */
const CLOSE_WAIT_MS = 1_000

type Action = 'load' | 'copy'

export interface PlacementOptions {
  config: PlacementConfig
  gateway: ModelPullingGateway
  register?: Registry
  now?: () => number
}

export class Placement extends Facility {
  readonly name = 'placement'
  private readonly config: PlacementConfig
  private readonly gateway: ModelPullingGateway
  private readonly tracker: DemandTracker
  private readonly now: () => number
  private readonly counter: Counter<'action' | 'outcome'> | null
  private readonly cancel = new CancelToken()
  private timer: NodeJS.Timeout | null = null
  private readonly running = new Set<Promise<void>>()

  constructor(opts: PlacementOptions) {
    super()
    this.config = opts.config
    this.gateway = opts.gateway
    this.tracker = new DemandTracker(opts.config)
    this.now = opts.now ?? Date.now
    this.counter = opts.register
      ? new Counter({
          name: 'llm_mesh_gateway_placements_total',
          help: 'Placement actions for queued demand: action (load, copy), outcome (ok, failed).',
          labelNames: ['action', 'outcome'],
          registers: [opts.register],
        })
      : null
  }

  protected override async _open(): Promise<void> {
    this.timer = setInterval(() => this.tick(), this.config.intervalMs)
    this.timer.unref()
  }

  protected override async _close(): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    this.timer = null
    this.cancel.abort(new MeshError('ERR_UNAVAILABLE', 'the gateway is stopping'))
    // A copy stops with the cancel; a load may take minutes: not waited for past a moment (it
    // fails when the connections close, and the processor keeps the model for its keep-alive).
    const settled = Promise.allSettled([...this.running])
    await Promise.race([settled, new Promise((resolve) => setTimeout(resolve, CLOSE_WAIT_MS).unref())])
  }

  /** One look at the queue; starts an action for each model due one. */
  tick(): void {
    let waiting: Map<string, ModelWaiting>
    try {
      waiting = this.gateway.router.waitingByModel()
    } catch {
      return // the router is not open yet, or closing
    }
    const now = this.now()
    for (const model of this.tracker.observe(waiting, now)) {
      this.tracker.started(model, now)
      const oldest = waiting.get(model)
      const run = this.place(model, oldest ? now - oldest.oldestSince : 0, oldest?.count ?? 0)
        .then(
          (ok) => this.tracker.ended(model, ok),
          (err: unknown) => {
            this.gateway.log.warn({ model, err }, `placement: '${model}' failed; backing off`)
            this.tracker.ended(model, false)
          },
        )
        .finally(() => this.running.delete(run))
      this.running.add(run)
    }
  }

  /** Loads `model` where it is held but cold, else copies it and loads it; whether it worked. */
  private async place(model: string, waitedMs: number, queued: number): Promise<boolean> {
    const { router, log } = this.gateway
    const why = { model, waitedMs, queued }
    const cold = loadTarget(router.entriesFor(model), model)
    if (cold) return this.load(cold, model, why)
    if (!this.config.copy) {
      log.info(why, `placement: '${model}' queues, and no idle processor holds it unloaded (copy is off)`)
      return false
    }
    const target = copyTarget(router.live(), model)
    if (!target) {
      log.info(why, `placement: '${model}' queues, and no idle processor can take it`)
      return false
    }
    log.info({ ...why, processor: target.id }, `placement: copying '${model}' onto an idle processor`)
    try {
      await copyOnto(this.gateway.modelPull, target.id, model, this.cancel)
    } catch (err) {
      const { reason } = MeshError.from(err)
      log.warn(
        { ...why, processor: target.id, err: reason },
        `placement: copying '${model}' failed; backing off`,
      )
      this.count('copy', false)
      return false
    }
    this.count('copy', true)
    return this.load(target, model, why)
  }

  private async load(entry: ProcessorEntry, model: string, why: Record<string, unknown>): Promise<boolean> {
    const { router, net, log } = this.gateway
    const { keepAliveMs } = this.config
    log.info(
      { ...why, processor: entry.id, keepAliveMs },
      `placement: loading '${model}' on an idle processor that holds it`,
    )
    try {
      await loadOn(net, entry.publicKey, model, keepAliveMs)
    } catch (err) {
      log.warn({ ...why, processor: entry.id, err }, `placement: loading '${model}' failed; backing off`)
      this.count('load', false)
      return false
    }
    this.count('load', true)
    // Routable as loaded at once; its status says so from its next beat.
    entry.loaded?.add(baseModel(model))
    await router.beatNow(entry).catch(() => {})
    log.info({ model, processor: entry.id }, `placement: '${model}' loaded`)
    return true
  }

  private count(action: Action, ok: boolean): void {
    this.counter?.inc({ action, outcome: ok ? 'ok' : 'failed' })
  }
}

/** The gateway's placement facility when `placement.enabled`, after the router (none otherwise). */
export function placementSpecs(
  gateway: ModelPullingGateway,
  config: PlacementConfig,
  register: Registry,
): FacilitySpec[] {
  if (!config.enabled) return []
  return [{ name: 'placement', priority: 55, create: () => new Placement({ config, gateway, register }) }]
}
