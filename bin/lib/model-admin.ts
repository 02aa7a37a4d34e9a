import { MeshError } from '../../kernel/errors.js'
import type { InventoryModel, ModelInventoryReply } from '../../workers/gateway/model-inventory.js'
import type { ModelOpName } from '../../workers/gateway/model-ops.js'
import { parse, str, WORKER_FLAGS } from './common.js'
import { CREDENTIAL_FLAGS } from './credentials.js'
import { duration } from './invites.js'
import { withMeshClient } from './join.js'

export const MODEL_LS_HELP = `Usage: llm-mesh model ls [--json]

Lists the models of the mesh, asked of every processor the gateway knows: for each model,
the processors holding it, how many have it loaded (in memory), its size and content digest
(sha256 of the GGUF file; Ollama's own digest on an Ollama processor). Admins see each
holder (processor key, quantization, keep-alive expiry) and the processors that did not
answer; other users see the models their key may use and how many processors hold them.
DESIRED is the desired state an admin set ('model replicas'): N processors holding it at
least, and how many with it loaded; HELD and LOADED are what is.
Signed in as for 'user' (--data DIR, or --bootstrap with --api-key / --user).`

const DIGEST_PREFIX = 12

function sizeText(bytes: number): string {
  if (bytes >= 1e9) return `${(bytes / 1e9).toFixed(1)} GB`
  if (bytes >= 1e6) return `${(bytes / 1e6).toFixed(1)} MB`
  if (bytes >= 1e3) return `${(bytes / 1e3).toFixed(1)} kB`
  return `${bytes} B`
}

function distinct(values: string[]): string {
  return [...new Set(values)].join(',') || '-'
}

/** Desired state as `model ls` shows it: `2` (held on 2 at least), `2 (1 loaded)`, or `-`. */
function desiredText(d: InventoryModel['desired']): string {
  if (!d) return '-'
  return d.loaded ? `${d.replicas} (${d.loaded} loaded)` : String(d.replicas)
}

/** The `model ls` table: one row per model, desired state (DESIRED) against HELD and LOADED. */
export function inventoryTable(reply: ModelInventoryReply): string {
  const rows = [['MODEL', 'DESIRED', 'HELD', 'LOADED', 'HOLDERS', 'SIZE', 'DIGEST']]
  for (const m of reply.models) {
    const holders = m.holders ?? []
    rows.push([
      m.name,
      desiredText(m.desired),
      String(m.held),
      String(m.loaded),
      holders.length > 0 ? holders.map((h) => h.processor.slice(0, 8)).join(',') : '-',
      holders.length > 0 ? distinct(holders.map((h) => sizeText(h.size))) : '-',
      holders.length > 0 ? distinct(holders.map((h) => h.digest.slice(0, DIGEST_PREFIX))) : '-',
    ])
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)))
  const lines = rows.map((r) =>
    r
      .map((c, i) => c.padEnd(widths[i]))
      .join('  ')
      .trimEnd(),
  )
  for (const p of reply.processors ?? []) {
    if (p.error) lines.push(`processor ${p.processor.slice(0, 16)} did not answer: ${p.error}`)
  }
  if (!reply.processors && reply.unanswered > 0) lines.push(`${reply.unanswered} processor(s) did not answer`)
  return `${lines.join('\n')}\n`
}

/** `llm-mesh model ls [--json]`: the models of the mesh, through a running gateway. */
export async function commandModelLs(args: string[]): Promise<number> {
  const { values } = parse(args, {
    ...WORKER_FLAGS,
    ...CREDENTIAL_FLAGS,
    user: { type: 'string' },
    json: { type: 'boolean' },
  })
  if (values.help) {
    process.stdout.write(`${MODEL_LS_HELP}\n`)
    return 0
  }
  const reply = await withMeshClient(values, (client) => client.modelInventory())
  process.stdout.write(values.json ? `${JSON.stringify(reply, null, 2)}\n` : inventoryTable(reply))
  return 0
}

export const MODEL_OP_HELP = `Usage: llm-mesh model rm NAME (--on KEY… | --all) [--json]
       llm-mesh model cp SOURCE DESTINATION [--on KEY…] [--json]
       llm-mesh model load NAME [--on KEY…] [--keep-alive DUR] [--json]
       llm-mesh model unload NAME [--on KEY…] [--json]

Admin commands, through a gateway, on the processors named (--on KEY, repeatable or
comma-separated: a processor key in hex or its first 8 hex digits at least; 'model ls'
and 'status' list them), else on every processor holding the model.
  rm      delete the model (llama.cpp: its GGUF file, unloaded first; refused while a
          request uses it; Ollama: /api/delete). Names its processors, or --all holders.
  cp      a second name for the model (llama.cpp: DESTINATION.gguf, a hard link;
          Ollama: /api/copy)
  load    load it into memory (warm), kept --keep-alive DUR idle (30m, 12h, 'never':
          until unloaded; default the processor's)
  unload  free its memory now (refused while a request uses it, llama.cpp)
Signed in as for 'user' (--data DIR, or --bootstrap with --api-key / --user).`

const OPS: Record<string, { op: ModelOpName; names: number }> = {
  rm: { op: 'remove', names: 1 },
  cp: { op: 'copy', names: 2 },
  load: { op: 'load', names: 1 },
  unload: { op: 'unload', names: 1 },
}

/** Whether `model SUB` is one of these commands. */
export const isModelOp = (sub: string | undefined): boolean => sub !== undefined && Object.hasOwn(OPS, sub)

/** `llm-mesh model rm|cp|load|unload …`: forwarded by the gateway to processors (admins). */
export async function commandModelOp(sub: string, args: string[]): Promise<number> {
  const { values, positionals } = parse(
    args,
    {
      ...WORKER_FLAGS,
      ...CREDENTIAL_FLAGS,
      user: { type: 'string' },
      json: { type: 'boolean' },
      on: { type: 'string', multiple: true },
      all: { type: 'boolean' },
      'keep-alive': { type: 'string' },
    },
    true,
  )
  const { op, names } = OPS[sub] as { op: ModelOpName; names: number }
  if (values.help) {
    process.stdout.write(`${MODEL_OP_HELP}\n`)
    return 0
  }
  if (positionals.length !== names)
    throw MeshError.badRequest(`usage: llm-mesh model ${sub} ${names === 2 ? 'SOURCE DESTINATION' : 'NAME'}`)
  const on = ((values.on ?? []) as unknown as string[]).flatMap((v) => v.split(',')).filter((v) => v !== '')
  if (values.all && on.length > 0) throw MeshError.badRequest('--on or --all, not both')
  if (values.all && op !== 'remove')
    throw MeshError.badRequest('--all: for rm only (the others act on every holder)')
  if (op === 'remove' && !values.all && on.length === 0)
    throw MeshError.badRequest('model rm: name the processors (--on KEY) or say --all (every holder)')
  const keep = str(values['keep-alive'])
  if (keep !== undefined && op !== 'load') throw MeshError.badRequest('--keep-alive: for load only')
  const keepAliveMs = keep === undefined ? undefined : (duration(keep, 'keep-alive') ?? -1)
  const [model, destination] = positionals as [string, string | undefined]
  const reply = await withMeshClient(values, (client) =>
    client.modelOp(op, model, {
      ...(on.length > 0 ? { processors: on } : {}),
      ...(values.all ? { all: true } : {}),
      ...(destination !== undefined ? { destination } : {}),
      ...(keepAliveMs !== undefined ? { keepAliveMs } : {}),
    }),
  )
  if (values.json) process.stdout.write(`${JSON.stringify(reply, null, 2)}\n`)
  else {
    for (const r of reply.results) {
      const what = r.ok
        ? r.unloaded === false
          ? 'ok (was not loaded)'
          : 'ok'
        : `${r.error?.code}: ${r.error?.message}`
      process.stdout.write(
        `${sub} ${model}${destination ? ` ${destination}` : ''} on ${r.processor.slice(0, 16)}: ${what}\n`,
      )
    }
  }
  return reply.results.every((r) => r.ok) ? 0 : 1
}
