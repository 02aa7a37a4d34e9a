import type { Identity } from '../../facilities/auth/identity.js'
import type { Logger } from '../../facilities/log.facility.js'
import type { NetFacility } from '../../facilities/net/net.facility.js'
import type { MethodTable } from '../../facilities/net/rpc-server.js'
import type { RouterFacility } from '../../facilities/router/router.facility.js'
import { baseModel } from '../../kernel/inference.js'
import { errorMessage } from '../../kernel/util.js'
import type { ProcessorState } from '../../kernel/wire.js'
import type { HeldModel } from '../processor/model-admin.js'
import { visibleTo } from './key-models.js'
import { type DesiredModel, publicDesired } from './model-reconciler.js'

/** How long the gateway waits for each processor's inventory (they are asked in parallel). */
export const INVENTORY_TIMEOUT_MS = 5_000

/** One processor's copy of a model (admins see these). */
export interface ModelHolder extends Omit<HeldModel, 'name'> {
  processor: string
}

/** A model of the mesh: admins see each holder; others see how many hold it and have it loaded. */
export interface InventoryModel {
  name: string
  holders?: ModelHolder[]
  held: number
  loaded: number
  /** What an admin asked for (desired state), when anything was: compare with `held` and `loaded`. */
  desired?: { replicas: number; loaded?: number }
}

/** Where the desired state is read (ModelDesired). */
export interface DesiredSource {
  list(): DesiredModel[]
}

/** A processor asked, and whether it answered (admins see these). */
export interface InventoryProcessor {
  processor: string
  state: ProcessorState
  backend?: string
  /** Why it is not in the inventory: unreachable, or its error or timeout. */
  error?: string
}

export interface ModelInventoryReply {
  models: InventoryModel[]
  /** Admins: every processor this gateway knows, and whether it answered. */
  processors?: InventoryProcessor[]
  /** Processors that did not answer (their models are missing from `models`). */
  unanswered: number
}

export interface ModelInventoryOptions {
  router: () => RouterFacility
  net: () => NetFacility
  log: () => Logger
  /** The caller, or null when accounts are disabled (then everyone sees everything). @throws ERR_AUTH_* */
  identify: (payload: unknown) => Identity | null
}

export interface Answer {
  view: InventoryProcessor
  models: HeldModel[]
}

/** Groups the processors' models by name, sorted, holders by processor key. */
export function groupByModel(answers: Answer[]): InventoryModel[] {
  const byName = new Map<string, ModelHolder[]>()
  for (const { view, models } of answers) {
    for (const { name, ...held } of models) {
      const holders = byName.get(name) ?? []
      holders.push({ processor: view.processor, ...held })
      byName.set(name, holders)
    }
  }
  return [...byName.entries()]
    .sort((a, b) => a[0].localeCompare(b[0]))
    .map(([name, holders]) => ({
      name,
      holders: holders.sort((a, b) => a.processor.localeCompare(b.processor)),
      held: holders.length,
      loaded: holders.filter((h) => h.loaded).length,
    }))
}

/** `models` with each desired state added; a model desired but held nowhere is listed with none. */
export function withDesired(models: InventoryModel[], desired: DesiredModel[]): InventoryModel[] {
  if (desired.length === 0) return models
  const out = [...models]
  for (const d of desired) {
    const wanted = publicDesired(d)
    const m = out.find((x) => baseModel(x.name) === baseModel(d.model))
    if (m) m.desired = wanted
    else out.push({ name: d.model, holders: [], held: 0, loaded: 0, desired: wanted })
  }
  return out.sort((a, b) => a.name.localeCompare(b.name))
}

/**
 * The mesh's model inventory (`modelInventory`, `llm-mesh model ls`): the gateway asks every
 * processor it knows, in parallel and for at most INVENTORY_TIMEOUT_MS, what it holds and has
 * loaded. Any signed-in user may ask: admins see each holder (processor key, size, digest,
 * format, quantization, loaded state and expiry) and which processors did not answer; users
 * see the names of the models their key may use, with how many processors hold and have
 * loaded each, and no processor keys. Everyone sees each model's desired state (model-desired.ts).
 */
export class ModelInventory {
  constructor(private readonly opts: ModelInventoryOptions) {}

  /** `desired`: the desired state shown with each model (ModelDesired). */
  methods(desired?: DesiredSource): MethodTable {
    return {
      // Any user; details for admins.
      modelInventory: (payload) => this.inventory(this.opts.identify(payload), desired?.list() ?? []),
    }
  }

  /** Every processor's answer (or why there is none). */
  async gather(): Promise<Answer[]> {
    const entries = this.opts.router().list()
    return Promise.all(
      entries.map(async (p): Promise<Answer> => {
        const view: InventoryProcessor = { processor: p.publicKey, state: p.state }
        if (p.state === 'unreachable') return { view: { ...view, error: 'unreachable' }, models: [] }
        try {
          const reply = await this.opts
            .net()
            .peer(Buffer.from(p.publicKey, 'hex'))
            .request<{ backend?: string; models?: HeldModel[] }>('modelInventory', null, {
              timeout: INVENTORY_TIMEOUT_MS,
            })
          return { view: { ...view, backend: reply.backend ?? p.backend }, models: reply.models ?? [] }
        } catch (err) {
          this.opts.log().warn({ err, processor: p.publicKey }, 'modelInventory failed')
          return { view: { ...view, error: errorMessage(err) }, models: [] }
        }
      }),
    )
  }

  async inventory(identity: Identity | null, desired: DesiredModel[] = []): Promise<ModelInventoryReply> {
    const answers = await this.gather()
    const unanswered = answers.filter((a) => a.view.error !== undefined).length
    const models = withDesired(groupByModel(answers), desired)
    // Accounts disabled: nobody is signed in, and the gateway shows everything, as for `models`.
    if (identity === null || identity.role === 'admin') {
      return { models, processors: answers.map((a) => a.view), unanswered }
    }
    return {
      models: visibleTo(identity, models).map(({ name, held, loaded, desired: d }) =>
        d ? { name, held, loaded, desired: d } : { name, held, loaded },
      ),
      unanswered,
    }
  }
}
