import type { Identity } from '../../facilities/auth/identity.js'
import type { Logger } from '../../facilities/log.facility.js'
import type { NetFacility } from '../../facilities/net/net.facility.js'
import type { MethodTable } from '../../facilities/net/rpc-server.js'
import type { RouterFacility } from '../../facilities/router/router.facility.js'
import { MeshError } from '../../kernel/errors.js'
import { isRecord } from '../../kernel/util.js'
import { type ModelOp, parseModelOp } from '../processor/model-admin.js'
import type { ModelInventory } from './model-inventory.js'
import { failedOn } from './model-outcome.js'

/** How long the gateway waits for each processor to do it (a load reads the whole file). */
const OP_TIMEOUT_MS = 120_000

export type ModelOpName = 'remove' | 'copy' | 'load' | 'unload'

const PROCESSOR_METHOD: Record<ModelOpName, string> = {
  remove: 'modelRemove',
  copy: 'modelCopy',
  load: 'modelLoad',
  unload: 'modelUnload',
}

/**
 * Loads `model` on one processor (`modelLoad`): kept for `keepAliveMs` idle, -1 until unloaded.
 * @throws the processor's error
 */
export async function loadOn(
  net: NetFacility,
  processor: Buffer,
  model: string,
  keepAliveMs: number,
): Promise<void> {
  await net.peer(processor).request('modelLoad', { model, keepAliveMs }, { timeout: OP_TIMEOUT_MS })
}

/** One processor's outcome. */
export interface ModelOpResult {
  processor: string
  ok: boolean
  /** `unload`: whether it was loaded. */
  unloaded?: boolean
  error?: { code: string; message: string }
}

export interface ModelOpReply {
  model: string
  results: ModelOpResult[]
}

export interface ModelOpsOptions {
  router: () => RouterFacility
  net: () => NetFacility
  log: () => Logger
  inventory: ModelInventory
  /** The caller, an admin. @throws ERR_AUTH_*, ERR_FORBIDDEN */
  requireAdmin: (payload: unknown) => Identity
}

/** `processors`: keys or prefixes; `all`: every holder. */
interface Targets {
  processors: string[] | null
  all: boolean
}

function parseTargets(payload: unknown): Targets {
  const p = isRecord(payload) ? payload : {}
  if (p.all !== undefined && typeof p.all !== 'boolean') throw MeshError.badRequest('all: true or false')
  if (p.processors === undefined || p.processors === null) return { processors: null, all: p.all === true }
  if (
    !Array.isArray(p.processors) ||
    p.processors.length === 0 ||
    p.processors.some((k) => typeof k !== 'string')
  )
    throw MeshError.badRequest('processors: a list of processor keys in hex (or prefixes)')
  if (p.all === true) throw MeshError.badRequest('processors or all, not both')
  return { processors: p.processors as string[], all: false }
}

/** Whether a processor's model `held` is the one named (`name:latest` names `name`). */
const sameModel = (held: string, named: string) => held === named || `${held}:latest` === named

/**
 * An admin's changes to the models processors hold, through the gateway (`modelRemove`,
 * `modelCopy`, `modelLoad`, `modelUnload`; `llm-mesh model rm|cp|load|unload`): forwarded to
 * the processors named (by key or prefix), else to every processor holding the model (a
 * remove must name them, or say `all`). Each processor does its part; the reply lists each
 * one's outcome, and the gateway refreshes its view of the processors changed at once.
 */
export class ModelOps {
  constructor(private readonly opts: ModelOpsOptions) {}

  methods(): MethodTable {
    return {
      // Admins only.
      modelRemove: (payload) => this.run('remove', payload),
      modelCopy: (payload) => this.run('copy', payload),
      modelLoad: (payload) => this.run('load', payload),
      modelUnload: (payload) => this.run('unload', payload),
    }
  }

  /** Checks the caller, then does `op` on the processors it names or on the holders. */
  run(op: ModelOpName, payload: unknown): Promise<ModelOpReply> {
    return this.runAs(this.opts.requireAdmin(payload), op, payload)
  }

  /** Does `op` for `actor`, an admin (checked by the caller: the HTTP front checks its own). */
  async runAs(actor: Identity, op: ModelOpName, payload: unknown): Promise<ModelOpReply> {
    const args = parseModelOp(payload, op)
    const targets = parseTargets(payload)
    if (op === 'remove' && !targets.processors && !targets.all)
      throw MeshError.badRequest('model remove: name the processors, or say all (every holder)')
    const keys = targets.processors
      ? targets.processors.map((k) => this.opts.router().find(k).id)
      : await this.holders(args.model)
    const results = await Promise.all(keys.map((key) => this.on(key, op, args)))
    this.opts.log().info({ op, model: args.model, by: actor.username, results }, `model ${op}`)
    return { model: args.model, results }
  }

  /** Every processor holding `model`. @throws ERR_MODEL_NOT_FOUND when none does */
  async holders(model: string): Promise<string[]> {
    const answers = await this.opts.inventory.gather()
    const keys = answers
      .filter((a) => a.models.some((m) => sameModel(m.name, model)))
      .map((a) => a.view.processor)
    if (keys.length === 0) throw MeshError.modelNotFound(model)
    return keys
  }

  private async on(processor: string, op: ModelOpName, args: ModelOp): Promise<ModelOpResult> {
    try {
      const reply = await this.opts
        .net()
        .peer(Buffer.from(processor, 'hex'))
        .request<{ unloaded?: boolean }>(PROCESSOR_METHOD[op], args, { timeout: OP_TIMEOUT_MS })
      // What it serves changed: routing knows at once, not at its next heartbeat.
      if (op === 'remove' || op === 'copy') await this.beat(processor)
      return { processor, ok: true, ...(op === 'unload' ? { unloaded: reply?.unloaded === true } : {}) }
    } catch (err) {
      return failedOn(processor, err)
    }
  }

  private async beat(processor: string): Promise<void> {
    try {
      await this.opts.router().beatNow(this.opts.router().find(processor))
    } catch (err) {
      this.opts.log().debug({ err, processor }, 'no heartbeat after a model change')
    }
  }
}
