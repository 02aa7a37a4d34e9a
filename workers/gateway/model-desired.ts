/**
 * Desired state of the mesh's models (docs/operations.md "Desired state"): an admin sets, per
 * model, `replicas` (at least that many processors hold it) and optionally `loaded` (at least
 * that many have it in memory): RPC `modelDesired { model, replicas?, loaded? }`,
 * `llm-mesh model replicas NAME N [--loaded M]`. Each call sets the model's whole desired
 * state (replicas omitted: as many as `loaded`); replicas 0 with no loaded clears it. Kept in
 * the gateway's Hyperbee `models` as `desired/<model>` (in memory only on a gateway without a
 * store) and reconciled by the loop (model-reconcile-loop.ts), which runs while this facility
 * is open. Audited (`model.desired`).
 */
import type Hyperbee from 'hyperbee'
import { z } from 'zod'
import type { Identity } from '../../facilities/auth/identity.js'
import { Facility } from '../../facilities/facility.js'
import { Serial } from '../../facilities/lib/serial.js'
import type { Logger } from '../../facilities/log.facility.js'
import type { NetFacility } from '../../facilities/net/net.facility.js'
import type { MethodTable } from '../../facilities/net/rpc-server.js'
import type { RouterFacility } from '../../facilities/router/router.facility.js'
import type { StoreFacility } from '../../facilities/store.facility.js'
import { type GatewayConfig, validate } from '../../kernel/config.js'
import { baseModel, MAX_MODEL_NAME } from '../../kernel/inference.js'
import type { ModelInventory } from './model-inventory.js'
import type { GatewayModelPull } from './model-pull.js'
import { ReconcileLoop } from './model-reconcile-loop.js'
import { type DesiredModel, publicDesired } from './model-reconciler.js'

export const MODELS_BEE = 'models'
/** Most processors a model may be asked to be on. */
export const MAX_REPLICAS = 1024

const count = z.number().int().min(0).max(MAX_REPLICAS)

export const desiredRequestSchema = z
  .object({
    model: z
      .string()
      .min(1)
      .max(MAX_MODEL_NAME)
      .refine((s) => s.trim() === s && baseModel(s) !== '', 'a model name'),
    replicas: count.optional(),
    loaded: count.optional(),
  })
  .strip()
  .refine((r) => r.replicas === undefined || r.loaded === undefined || r.loaded <= r.replicas, {
    message: 'loaded: at most replicas (a model is loaded where it is held)',
    path: ['loaded'],
  })

/** What is kept of one model's desired state. */
export interface DesiredRecord extends DesiredModel {
  /** Who set it (user id) and when (ISO 8601). */
  setBy: string
  setAt: string
}

export interface DesiredReply {
  model: string
  /** The desired state now; null: cleared. */
  desired: { replicas: number; loaded?: number } | null
}

/** What of the gateway desired state uses. */
export interface DesiredGateway {
  readonly config: GatewayConfig
  readonly router: RouterFacility
  readonly net: NetFacility
  readonly log: Logger
  readonly store: StoreFacility
  /** The gateway's one pull: copies it orders join those placement or an admin ordered. */
  readonly modelPull: Pick<GatewayModelPull, 'run'>
}

/** @throws ERR_BAD_REQUEST */
export function parseDesired(payload: unknown): DesiredModel {
  const r = validate(desiredRequestSchema, payload, 'request', 'ERR_BAD_REQUEST')
  const replicas = r.replicas ?? r.loaded ?? 0
  return { model: r.model, replicas, ...(r.loaded ? { loaded: r.loaded } : {}) }
}

export class ModelDesired extends Facility {
  readonly name = 'model-desired'
  private bee: Hyperbee | null = null
  /** By base model name. */
  private readonly table = new Map<string, DesiredRecord>()
  private readonly serial = new Serial()
  private loop: ReconcileLoop | null = null

  constructor(
    private readonly gateway: DesiredGateway,
    private readonly inventory: () => ModelInventory,
  ) {
    super()
  }

  protected override async _open(): Promise<void> {
    if (this.gateway.config.store) {
      const bee = await this.gateway.store.bee(MODELS_BEE)
      const stream = bee.createReadStream<DesiredRecord>({ gte: 'desired/', lt: 'desired0' })
      for await (const { value } of stream) this.table.set(baseModel(value.model), value)
      this.bee = bee
    }
    const { reconcileMs, maxCopies } = this.gateway.config.models
    this.loop = new ReconcileLoop({
      reconcileMs,
      maxCopies,
      router: () => this.gateway.router,
      net: () => this.gateway.net,
      log: () => this.gateway.log,
      gather: () => this.inventory().gather(),
      pull: this.gateway.modelPull,
      desired: () => this.list(),
    })
    this.loop.start()
  }

  protected override async _close(): Promise<void> {
    await this.loop?.stop()
    await this.serial.idle()
    this.bee = null
  }

  /** The desired state of every model, by name. */
  list(): DesiredModel[] {
    return [...this.table.values()]
      .map(({ model, replicas, loaded }) => ({ model, replicas, ...(loaded ? { loaded } : {}) }))
      .sort((a, b) => a.model.localeCompare(b.model))
  }

  /** The reconciler, while open (tests read what is under way). */
  get reconciler(): ReconcileLoop | null {
    return this.loop
  }

  /** RPC `modelDesired`, admins only; `requireAdmin` checks the payload's credential. */
  methods(requireAdmin: (payload: unknown) => Identity): MethodTable {
    return {
      modelDesired: (payload) => this.set(requireAdmin(payload), parseDesired(payload)),
    }
  }

  /** Sets (or with replicas 0 and no loaded, clears) `d.model`'s desired state; reconciles soon. */
  async set(actor: Identity, d: DesiredModel): Promise<DesiredReply> {
    const key = baseModel(d.model)
    const clear = d.replicas === 0 && !d.loaded
    await this.serial.run(async () => {
      if (clear) {
        await this.bee?.del(`desired/${key}`)
        this.table.delete(key)
        return
      }
      const record: DesiredRecord = { ...d, setBy: actor.userId, setAt: new Date().toISOString() }
      await this.bee?.put(`desired/${key}`, record)
      this.table.set(key, record)
    })
    this.gateway.log.info(
      { model: d.model, by: actor.username, ...publicDesired(d) },
      clear ? 'desired state cleared' : 'desired state set',
    )
    this.loop?.kick(0)
    return { model: d.model, desired: clear ? null : publicDesired(d) }
  }
}
