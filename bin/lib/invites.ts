import { parseBootstrapList } from '../../kernel/config-bootstrap.js'
import { MeshError } from '../../kernel/errors.js'
import type { PublicInvite } from '../../kernel/invite.js'
import { parse, str, WORKER_FLAGS } from './common.js'
import { CREDENTIAL_FLAGS } from './credentials.js'
import { withMeshClient } from './join.js'

/** `llm-mesh invite …`: join tokens, made, listed and revoked through a running gateway (admins). */

export const INVITE_HELP = `Usage: llm-mesh invite [--role processor|gateway] [--expires 30m|12h|7d|never] [--note TEXT]
                       [--token-bootstrap LIST] [--json]
       llm-mesh invite ls [--json]
       llm-mesh invite revoke ID

'invite' prints a token (shown this once) that sets up a new machine in one command:
  llm-mesh processor --join TOKEN            (--role processor, the default)
  llm-mesh gateway --join TOKEN --data DIR   (--role gateway)
It carries the mesh name, the DHT bootstrap (the gateway's, or --token-bootstrap
host:port[,host:port] | public), the gateway's key and a join credential. Until it
expires (default 24h) it joins any number of machines; 'invite revoke ID' stops it
joining more and makes the gateway refuse the processors that joined with it.
A gateway joined by invite is vouched for to this gateway's processors, which serve
its users too, and it learns which processors are the mesh's from this gateway;
revoking its invite makes those processors refuse it (docs/security.md).
Admin commands, signed in as for 'user' (--data DIR, or --bootstrap with --api-key / --user).`

const UNITS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/** `30m`, `12h`, `7d`, `90s` → ms; `never` → null. @throws ERR_BAD_REQUEST naming the flag */
export function duration(v: string, flag: string): number | null {
  if (v === 'never') return null
  const m = /^(\d+)([smhd])$/.exec(v.trim())
  const ms = m ? Number(m[1]) * (UNITS[m[2] as string] as number) : 0
  if (!m || ms < 1)
    throw MeshError.badRequest(`--${flag}: a duration like 30m, 12h or 7d, or 'never'; got '${v}'`)
  return ms
}

const print = (s: string) => process.stdout.write(`${s}\n`)

function describe(i: PublicInvite, now = Date.now()): string {
  const state = i.revokedAt
    ? `revoked ${i.revokedAt}`
    : i.expiresAt && Date.parse(i.expiresAt) <= now
      ? `expired ${i.expiresAt}`
      : i.expiresAt
        ? `expires ${i.expiresAt}`
        : 'no expiry'
  return `${i.id}  ${i.role.padEnd(9)} ${state}  members ${i.members.length}  by ${i.createdBy}${i.note ? `  ${i.note}` : ''}`
}

export async function commandInvite(args: string[]): Promise<number> {
  const { values, positionals } = parse(
    args,
    {
      ...WORKER_FLAGS,
      ...CREDENTIAL_FLAGS,
      user: { type: 'string' },
      role: { type: 'string' },
      expires: { type: 'string' },
      note: { type: 'string' },
      'token-bootstrap': { type: 'string' },
      json: { type: 'boolean' },
    },
    true,
  )
  const [sub, id] = positionals
  if (values.help) {
    print(INVITE_HELP)
    return 0
  }
  if (sub === undefined || sub === 'create') {
    const role = str(values.role) ?? 'processor'
    if (role !== 'processor' && role !== 'gateway')
      throw MeshError.badRequest(`--role: 'processor' or 'gateway', got '${role}'`)
    const expires = str(values.expires)
    const tokenBootstrap = str(values['token-bootstrap'])
    const note = str(values.note)
    return withMeshClient(values, async (client) => {
      const made = await client.createInvite({
        role,
        ...(expires !== undefined ? { expiresInMs: duration(expires, 'expires') } : {}),
        ...(note ? { note } : {}),
        ...(tokenBootstrap ? { bootstrap: parseBootstrapList(tokenBootstrap) as string[] | 'public' } : {}),
      })
      if (values.json) print(JSON.stringify(made, null, 2))
      else {
        process.stderr.write(
          `invite ${made.id} (${made.role}, ${made.expiresAt ? `expires ${made.expiresAt}` : 'no expiry'}); on the new machine run:\n  llm-mesh ${made.role === 'gateway' ? 'gateway --join TOKEN --data DIR' : 'processor --join TOKEN'}\nwith this token (shown once):\n`,
        )
        print(made.token)
      }
      return 0
    })
  }
  if (sub === 'ls' || sub === 'list') {
    return withMeshClient(values, async (client) => {
      const invites = await client.listInvites()
      if (values.json) print(JSON.stringify(invites, null, 2))
      else if (invites.length === 0) print('no invites')
      else for (const i of invites) print(describe(i))
      return 0
    })
  }
  if (sub === 'revoke') {
    if (!id) throw MeshError.badRequest('invite revoke ID')
    return withMeshClient(values, async (client) => {
      const i = await client.revokeInvite(id)
      print(`revoked ${i.id} (${i.members.length} member(s) refused from now on)`)
      return 0
    })
  }
  throw MeshError.badRequest(`unknown 'invite ${sub}' (create, ls, revoke)`)
}
