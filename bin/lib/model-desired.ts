/**
 * `llm-mesh model replicas NAME N [--loaded M] [--json]`: sets a model's desired state through a
 * running gateway (admins); the gateway copies and loads the model until it holds (docs/operations.md
 * "Desired state").
 */
import { MeshError } from '../../kernel/errors.js'
import { MAX_REPLICAS } from '../../workers/gateway/model-desired.js'
import { int, parse, WORKER_FLAGS } from './common.js'
import { CREDENTIAL_FLAGS } from './credentials.js'
import { withMeshClient } from './join.js'

export const MODEL_REPLICAS_HELP = `Usage: llm-mesh model replicas NAME N [--loaded M] [--json]

Desired state of model NAME (admins): the gateway keeps it on at least N processors, copying
it from a processor that holds it onto others (the same backend, serving, not draining), and,
with --loaded M, in memory on at least M of them (M <= N; loaded until unloaded). It acts
every models.reconcileMs and when processors join or leave; a failed copy or load is retried
later (backing off) or elsewhere. A minimum only: nothing is removed or unloaded.
  N = 0 (and no --loaded) clears the model's desired state.
'llm-mesh model ls' shows desired vs actual (DESIRED, HELD, LOADED).
  --json   the gateway's reply: {model, desired: {replicas, loaded?} | null}
Signed in as for 'user' (--data DIR, or --bootstrap with --api-key / --user).`

/** `llm-mesh model replicas NAME N [--loaded M]`. */
export async function commandModelReplicas(args: string[]): Promise<number> {
  const { values, positionals } = parse(
    args,
    {
      ...WORKER_FLAGS,
      ...CREDENTIAL_FLAGS,
      user: { type: 'string' },
      json: { type: 'boolean' },
      loaded: { type: 'string' },
    },
    true,
  )
  if (values.help) {
    process.stdout.write(`${MODEL_REPLICAS_HELP}\n`)
    return 0
  }
  const [model, n] = positionals
  if (!model || n === undefined || positionals.length !== 2)
    throw MeshError.badRequest('usage: llm-mesh model replicas NAME N [--loaded M]')
  const replicas = int(n, 'replicas (N)', 0, MAX_REPLICAS) as number
  const loaded = int(values.loaded, 'loaded', 0, MAX_REPLICAS)
  const reply = await withMeshClient(values, (client) =>
    client.modelDesired(model, { replicas, ...(loaded !== undefined ? { loaded } : {}) }),
  )
  if (values.json) process.stdout.write(`${JSON.stringify(reply, null, 2)}\n`)
  else if (!reply.desired) process.stdout.write(`${reply.model}: desired state cleared\n`)
  else {
    const { replicas: r, loaded: l } = reply.desired
    process.stdout.write(`${reply.model}: on ${r} processor(s) at least${l ? `, loaded on ${l}` : ''}\n`)
  }
  return 0
}
