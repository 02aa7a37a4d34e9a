import type { ModelInventoryReply } from '../../workers/gateway/model-inventory.js'
import { parse, WORKER_FLAGS } from './common.js'
import { CREDENTIAL_FLAGS } from './credentials.js'
import { withMeshClient } from './join.js'

export const MODEL_LS_HELP = `Usage: llm-mesh model ls [--json]

Lists the models of the mesh, asked of every processor the gateway knows: for each model,
the processors holding it, how many have it loaded (in memory), its size and content digest
(sha256 of the GGUF file; Ollama's own digest on an Ollama processor). Admins see each
holder (processor key, quantization, keep-alive expiry) and the processors that did not
answer; other users see the models their key may use and how many processors hold them.
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

/** The `model ls` table: one row per model. */
export function inventoryTable(reply: ModelInventoryReply): string {
  const rows = [['MODEL', 'HOLDERS', 'LOADED', 'SIZE', 'DIGEST']]
  for (const m of reply.models) {
    const holders = m.holders ?? []
    rows.push([
      m.name,
      holders.length > 0 ? holders.map((h) => h.processor.slice(0, 8)).join(',') : String(m.held),
      String(m.loaded),
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
