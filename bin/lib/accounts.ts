import { resolve } from 'node:path'
import { AuditLog } from '../../facilities/audit/audit-log.js'
import { AuthFacility } from '../../facilities/auth/auth.facility.js'
import { LogFacility } from '../../facilities/log.facility.js'
import { StoreFacility } from '../../facilities/store.facility.js'
import type { LimitState } from '../../kernel/accounts.js'
import { authConfigSchema, parseConfig } from '../../kernel/config.js'
import { readConfigFile } from '../../kernel/config-load.js'
import { MeshError } from '../../kernel/errors.js'
import type { UsageReport, UserLimitOverrides } from '../../workers/client/client.worker.js'
import { day, int, type Options, parse, str, WORKER_FLAGS } from './common.js'
import { CREDENTIAL_FLAGS, type FlagValues } from './credentials.js'
import { withMeshClient } from './join.js'

/** `llm-mesh user …`, `llm-mesh key …` and `llm-mesh usage`: account work through a running gateway. */

export const USER_HELP = `Usage: llm-mesh user add NAME --password PW [--admin] [--rpm N] [--tpm N]
                          [--daily-tokens N] [--monthly-tokens N]
       llm-mesh user list [--json]
       llm-mesh user set NAME [--rpm N|none] [--tpm N|none] [--daily-tokens N|none]
                          [--monthly-tokens N|none] [--reset-limits] [--admin|--no-admin]
                          [--disable|--enable] [--password PW]
       llm-mesh user add NAME --password PW --admin --store GATEWAY_STORE   (gateway stopped)

Admin commands, sent to the gateway of the mesh 'llm-mesh up' runs from --data DIR
(default ./.llm-mesh) as its local operator, or to any gateway with --bootstrap and
--api-key KEY / --user NAME. Limits: 'none' removes one; --reset-limits goes back to
the gateway's defaults. --store works on a stopped gateway's store directly (a
standalone gateway makes its first admin itself on its first start: see gateway --help).`

export const KEY_HELP = `Usage: llm-mesh key create --name LABEL [--user NAME] [--expires-days N] [--models a,b]
                          [--rpm N] [--tpm N]
       llm-mesh key list [--user NAME] [--json]
       llm-mesh key revoke ID

'key create' prints only the new key on stdout: it is shown this once, and the
gateway keeps only its hash. --user makes it for another user (admins). A key
works wherever a login token does; --models limits the models it may use.`

export const USAGE_HELP = `Usage: llm-mesh usage [--user NAME] [--from YYYY-MM-DD] [--to YYYY-MM-DD] [--model M]
                      [--records] [--json]

Tokens and requests per UTC day and model (default: this month so far), with today's
and this month's totals and where the limits stand. --user: another user's (admins).`

/** The longest a key may live, as the gateway allows. */
const MAX_KEY_DAYS = 36_500

const LIMIT_FLAGS: Options = {
  rpm: { type: 'string' },
  tpm: { type: 'string' },
  'daily-tokens': { type: 'string' },
  'monthly-tokens': { type: 'string' },
}

/** `N` → N, `none` → null (no limit), absent → undefined. @throws ERR_BAD_REQUEST */
function limitFlag(v: string | boolean | undefined, flag: string): number | null | undefined {
  if (typeof v !== 'string') return undefined
  if (v === 'none') return null
  const n = Number(v)
  if (!Number.isInteger(n) || n < 1)
    throw MeshError.badRequest(`--${flag}: a positive integer or 'none', got '${v}'`)
  return n
}

/** A user's limits and their flags; a key has the first two (rate limits, no quotas). */
const LIMIT_FIELDS: Array<[keyof UserLimitOverrides, string]> = [
  ['rpm', 'rpm'],
  ['tpm', 'tpm'],
  ['dailyTokens', 'daily-tokens'],
  ['monthlyTokens', 'monthly-tokens'],
]
const KEY_LIMIT_FIELDS = LIMIT_FIELDS.slice(0, 2)

/** The limits given as flags among `fields`. @throws ERR_BAD_REQUEST */
function limitsFrom(values: FlagValues, fields = LIMIT_FIELDS): UserLimitOverrides {
  const out: UserLimitOverrides = {}
  for (const [field, flag] of fields) {
    const v = limitFlag(values[flag], flag)
    if (v !== undefined) out[field] = v
  }
  return out
}

const print = (s: string) => process.stdout.write(`${s}\n`)
const fmtLimit = (n: number | null | undefined) =>
  n === null ? 'none' : n === undefined ? 'default' : String(n)

/** Creates a user in a stopped gateway's store (the first admin of a standalone gateway). */
async function addUserOffline(values: FlagValues, name: string, password: string): Promise<void> {
  const named = str(values.config)
  const file = readConfigFile(named ?? 'config/gateway.json', named !== undefined)
  const config = parseConfig(authConfigSchema, file.auth ?? {}, 'config.auth')
  const log = new LogFacility({ level: 'warn' })
  const store = new StoreFacility({ dir: resolve(str(values.store) as string) })
  await store.ready()
  const auth = new AuthFacility({ store, config, logger: log.logger })
  const audit = new AuditLog({ store, logger: log.logger, failureWindowMs: 60_000 })
  try {
    await auth.ready()
    await audit.ready()
    const user = await auth.createUser({
      username: name,
      password,
      role: values.admin ? 'admin' : 'user',
      limits: limitsFrom(values),
    })
    const details = { username: user.username, role: user.role, via: 'store' }
    await audit.record({ action: 'user.create', actor: 'cli', target: user.id, details })
    print(`created ${user.role} '${user.username}' in ${store.dir}`)
  } finally {
    await audit.close()
    await auth.close()
    await store.close()
  }
}

export async function commandUser(args: string[]): Promise<number> {
  const { values, positionals } = parse(
    args,
    {
      ...WORKER_FLAGS,
      ...CREDENTIAL_FLAGS,
      ...LIMIT_FLAGS,
      password: { type: 'string' },
      admin: { type: 'boolean' },
      'no-admin': { type: 'boolean' },
      disable: { type: 'boolean' },
      enable: { type: 'boolean' },
      'reset-limits': { type: 'boolean' },
      json: { type: 'boolean' },
      store: { type: 'string' },
    },
    true,
  )
  const [sub, name] = positionals
  if (values.help || !sub) {
    print(USER_HELP)
    return values.help ? 0 : 2
  }
  if (sub === 'add') {
    const password = str(values.password)
    if (!name || !password) throw MeshError.badRequest('user add NAME --password PW')
    if (str(values.store)) {
      await addUserOffline(values, name, password)
      return 0
    }
    return withMeshClient(values, async (client) => {
      const user = await client.createUser({
        username: name,
        password,
        role: values.admin ? 'admin' : 'user',
        limits: limitsFrom(values),
      })
      print(`created ${user.role} '${user.username}'`)
      return 0
    })
  }
  if (sub === 'list') {
    return withMeshClient(values, async (client) => {
      const users = await client.listUsers()
      if (values.json) print(JSON.stringify(users, null, 2))
      else {
        for (const u of users) {
          const l = u.limits
          print(
            `${u.username.padEnd(20)} ${u.role.padEnd(6)} ${u.disabled ? 'disabled' : 'active  '} rpm ${fmtLimit(l.rpm)} tpm ${fmtLimit(l.tpm)} daily ${fmtLimit(l.dailyTokens)} monthly ${fmtLimit(l.monthlyTokens)}`,
          )
        }
      }
      return 0
    })
  }
  if (sub === 'set') {
    if (!name) throw MeshError.badRequest('user set NAME …')
    if (values.disable && values.enable) throw MeshError.badRequest('--disable or --enable, not both')
    if (values.admin && values['no-admin']) throw MeshError.badRequest('--admin or --no-admin, not both')
    return withMeshClient(values, async (client) => {
      const limits = limitsFrom(values)
      const user = await client.updateUser(name, {
        ...(Object.keys(limits).length ? { limits } : {}),
        ...(values['reset-limits'] ? { resetLimits: true } : {}),
        ...(values.admin ? { role: 'admin' as const } : values['no-admin'] ? { role: 'user' as const } : {}),
        ...(values.disable ? { disabled: true } : values.enable ? { disabled: false } : {}),
        ...(str(values.password) ? { password: str(values.password) as string } : {}),
      })
      print(`updated '${user.username}': ${user.role}, ${user.disabled ? 'disabled' : 'active'}`)
      return 0
    })
  }
  throw MeshError.badRequest(`unknown 'user ${sub}' (add, list, set)`)
}

export async function commandKey(args: string[]): Promise<number> {
  const { values, positionals } = parse(
    args,
    {
      ...WORKER_FLAGS,
      ...CREDENTIAL_FLAGS,
      user: { type: 'string' },
      name: { type: 'string' },
      'expires-days': { type: 'string' },
      models: { type: 'string' },
      rpm: { type: 'string' },
      tpm: { type: 'string' },
      json: { type: 'boolean' },
    },
    true,
  )
  const [sub, id] = positionals
  if (values.help || !sub) {
    print(KEY_HELP)
    return values.help ? 0 : 2
  }
  // --user names whose key this is; who signs in comes from --api-key, --login or the operator key.
  const signInAs: FlagValues = { ...values, user: undefined }
  const owner = str(values.user)
  if (sub === 'create') {
    const name = str(values.name)
    if (!name) throw MeshError.badRequest('key create --name LABEL')
    const days = int(values['expires-days'], 'expires-days', 1, MAX_KEY_DAYS)
    const limits = limitsFrom(values, KEY_LIMIT_FIELDS)
    return withMeshClient(signInAs, async (client) => {
      const key = await client.createKey({
        name,
        ...(owner ? { user: owner } : {}),
        ...(days !== undefined ? { expiresInDays: days } : {}),
        ...(str(values.models) ? { models: (str(values.models) as string).split(',').filter(Boolean) } : {}),
        ...(Object.keys(limits).length > 0 ? { limits } : {}),
      })
      print(key.key)
      return 0
    })
  }
  if (sub === 'list') {
    return withMeshClient(signInAs, async (client) => {
      const keys = await client.listKeys(owner)
      if (values.json) print(JSON.stringify(keys, null, 2))
      else {
        for (const k of keys) {
          print(
            `${k.id}  ${k.name.padEnd(24)} ${k.revokedAt ? `revoked ${k.revokedAt}` : k.expiresAt ? `expires ${k.expiresAt}` : 'no expiry'}${k.models ? `  models ${k.models.join(',')}` : ''}`,
          )
        }
      }
      return 0
    })
  }
  if (sub === 'revoke') {
    if (!id) throw MeshError.badRequest('key revoke ID')
    return withMeshClient(signInAs, async (client) => {
      const k = await client.revokeKey(id)
      print(`revoked ${k.id} (${k.name})`)
      return 0
    })
  }
  throw MeshError.badRequest(`unknown 'key ${sub}' (create, list, revoke)`)
}

function limitLine(name: string, s: LimitState | undefined): string | null {
  if (!s) return null
  return `  ${name.padEnd(14)} ${s.limit === null ? 'no limit' : `${s.used} of ${s.limit}`}${
    s.limit !== null && s.resetMs > 0 ? ` (frees in ${Math.ceil(s.resetMs / 1000)} s)` : ''
  }`
}

/** Human text of a usage report (also used by the chat's /usage). */
export function formatUsage(r: UsageReport): string {
  const lines = [`usage of ${r.user}, ${r.from} … ${r.to} (UTC)`]
  for (const row of r.rows) {
    lines.push(
      `  ${row.day}  ${row.model.padEnd(28)} ${String(row.requests).padStart(6)} req  ${String(row.promptTokens).padStart(9)} prompt  ${String(row.completionTokens).padStart(9)} completion${row.errors ? `  ${row.errors} failed` : ''}`,
    )
  }
  const tokens = (c: UsageReport['total']) => c.promptTokens + c.completionTokens
  lines.push(`  today: ${r.today.requests} requests, ${tokens(r.today)} tokens`)
  lines.push(`  this month: ${r.month.requests} requests, ${tokens(r.month)} tokens`)
  lines.push(formatLimits(r.limits))
  return lines.join('\n')
}

/** Where each limit stands, one per line. */
export function formatLimits(limits: Record<string, LimitState>): string {
  const lines = ['limits:']
  for (const [name, label] of [
    ['rpm', 'requests/min'],
    ['tpm', 'tokens/min'],
    ['dailyTokens', 'tokens/day'],
    ['monthlyTokens', 'tokens/month'],
    ['keyRpm', 'key req/min'],
    ['keyTpm', 'key tokens/min'],
  ] as const) {
    const line = limitLine(label, limits[name])
    if (line) lines.push(line)
  }
  return lines.join('\n')
}

export async function commandUsage(args: string[]): Promise<number> {
  const { values } = parse(args, {
    ...WORKER_FLAGS,
    ...CREDENTIAL_FLAGS,
    user: { type: 'string' },
    from: { type: 'string' },
    to: { type: 'string' },
    model: { type: 'string' },
    records: { type: 'boolean' },
    json: { type: 'boolean' },
  })
  if (values.help) {
    print(USAGE_HELP)
    return 0
  }
  const owner = str(values.user)
  const from = day(values.from, 'from')
  const to = day(values.to, 'to')
  if (from && to && from > to) throw MeshError.badRequest(`--from ${from} is after --to ${to}`)
  return withMeshClient({ ...values, user: undefined }, async (client) => {
    const report = await client.usage({
      ...(owner ? { user: owner } : {}),
      ...(from ? { from } : {}),
      ...(to ? { to } : {}),
      ...(str(values.model) ? { model: str(values.model) as string } : {}),
      ...(values.records ? { records: true } : {}),
    })
    print(values.json ? JSON.stringify(report, null, 2) : formatUsage(report))
    return 0
  })
}
