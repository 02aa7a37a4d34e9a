import { type AuditEntry, DEFAULT_AUDIT_LIMIT, MAX_AUDIT_LIMIT } from '../../kernel/audit.js'
import { MeshError } from '../../kernel/errors.js'
import type { MeshClient } from '../../workers/client/client.worker.js'
import { int, parse, str, WORKER_FLAGS } from './common.js'
import { CREDENTIAL_FLAGS } from './credentials.js'
import { duration } from './invites.js'
import { withMeshClient } from './join.js'

/** `llm-mesh audit`: the gateway's audit log, read through it (admins). */

export const AUDIT_HELP = `Usage: llm-mesh audit [--since 1h|7d|ISO-TIME] [--until ISO-TIME] [--action NAME]
                     [--limit N] [--json]

The gateway's audit log: users created and changed, keys and invites made and revoked,
failed and locked-out logins, processors drained; who did it, to what, when and with what
outcome. Shows the newest --limit entries (default ${DEFAULT_AUDIT_LIMIT}, at most ${MAX_AUDIT_LIMIT}), oldest first,
since --since (a duration back from now, like 30m, 12h, 7d, or a time like 2026-12-07T10:00Z).
--action user matches user.create, user.role, …; --json prints { entries, more } as the
gateway answers them. Admin command, signed in as for 'user' (--data DIR, or --bootstrap with
--api-key / --user). docs/operations.md "Audit log" says what each action records.`

/** `30m` / `7d` (back from now) or an ISO 8601 time → ms. @throws ERR_BAD_REQUEST naming the flag */
export function instant(v: string, flag: string, now = Date.now()): number {
  if (/^\d+[smhd]$/.test(v.trim())) return now - (duration(v, flag) as number)
  const ms = /^\d{4}-\d{2}-\d{2}/.test(v) ? Date.parse(v) : Number.NaN
  if (!Number.isFinite(ms))
    throw MeshError.badRequest(`--${flag}: a duration like 30m, 12h or 7d, or an ISO time; got '${v}'`)
  return ms
}

const print = (s: string) => process.stdout.write(`${s}\n`)

/** One line an entry: time, action, outcome, actor, target, details; user ids shown with their names. */
export function formatEntry(e: AuditEntry, names: Map<string, string>): string {
  const who = (id: string | null) => (id && names.has(id) ? `${names.get(id)} (${id})` : (id ?? '-'))
  const details = e.details ? `  ${JSON.stringify(e.details)}` : ''
  const req = e.requestId ? `  request ${e.requestId}` : ''
  return `${new Date(e.at).toISOString()}  ${e.action.padEnd(20)} ${e.outcome.padEnd(16)} by ${who(e.actor)}  on ${who(e.target)}${req}${details}`
}

/** User ids to names, for the human output (empty when the listing fails). */
async function userNames(client: MeshClient): Promise<Map<string, string>> {
  const users = await client.listUsers().catch(() => [])
  return new Map(users.map((u) => [u.id, u.username]))
}

export async function commandAudit(args: string[]): Promise<number> {
  const { values } = parse(args, {
    ...WORKER_FLAGS,
    ...CREDENTIAL_FLAGS,
    user: { type: 'string' },
    since: { type: 'string' },
    until: { type: 'string' },
    action: { type: 'string' },
    limit: { type: 'string' },
    json: { type: 'boolean' },
  })
  if (values.help) {
    print(AUDIT_HELP)
    return 0
  }
  const since = str(values.since)
  const until = str(values.until)
  const action = str(values.action)
  const limit = int(values.limit, 'limit', 1, MAX_AUDIT_LIMIT)
  const query = {
    ...(since !== undefined ? { since: instant(since, 'since') } : {}),
    ...(until !== undefined ? { until: instant(until, 'until') } : {}),
    ...(action !== undefined ? { action } : {}),
    ...(limit !== undefined ? { limit } : {}),
  }
  return withMeshClient(values, async (client) => {
    const page = await client.audit(query)
    if (values.json) {
      print(JSON.stringify(page, null, 2))
      return 0
    }
    const names = await userNames(client)
    if (page.more) print(`(older entries match too: narrow --since or raise --limit)`)
    if (page.entries.length === 0) print('no audit entries')
    for (const e of page.entries) print(formatEntry(e, names))
    return 0
  })
}
