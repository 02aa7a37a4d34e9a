import { PassThrough } from 'node:stream'
import test from 'brittle'
import type { AuditEntry } from '../../kernel/audit.js'
import { gatewayConfigSchema, parseConfig } from '../../kernel/config.js'
import { deepMerge } from '../../kernel/config-load.js'
import { decodeInvite } from '../../kernel/invite.js'
import { GatewayWorker } from '../../workers/gateway/gateway.worker.js'
import { rejectsWith } from '../helpers/assert.js'
import { runFresh } from '../helpers/fresh-machine.js'
import {
  apiKeyFor,
  FAST_REGISTRY,
  spawnProcessor,
  startClient,
  startGateway,
  type T,
  TEST_AUTH,
  testnet,
  until,
} from '../helpers/mesh.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const BOB_PW = 'bob-first-password'
const RESET_PW = 'bob-reset-password'
const CHANGED_PW = 'bob-changed-password'
const WRONG_PW = 'bob-wrong-password'
/** A password typed into the name field: valid as a name, so it must not be copied into the log. */
const PASSWORD_AS_NAME = 'Tr0ub4dor-and-3'
const WINDOW_MS = 1_000

/** A gateway as `startGateway` makes it, logging everything (trace) into a string. */
async function loggingGateway(t: T, bootstrap: string[], extra: Record<string, unknown>) {
  let text = ''
  const sink = new PassThrough()
  sink.on('data', (d: Buffer) => {
    text += d
  })
  const config = parseConfig(
    gatewayConfigSchema,
    deepMerge(
      { bootstrap, store: await t.tmp(), log: { level: 'trace' }, registry: FAST_REGISTRY, auth: TEST_AUTH },
      extra,
    ),
  )
  const gateway = new GatewayWorker(config, { logDestination: sink })
  t.teardown(() => gateway.close(), { order: 1 })
  await gateway.ready()
  return { gateway, logs: () => text }
}

/** What an entry says, without its time and id. */
const facts = (e: AuditEntry) => [e.action, e.actor, e.target, e.outcome]

test('audit: every audited action through the RPC API, read back exactly; no secret in it; admins only', async (t) => {
  const { bootstrap } = await testnet(t)
  const { gateway, logs } = await loggingGateway(t, bootstrap, {
    auth: { maxFailuresPerAccount: 2 },
    audit: { failureWindowMs: WINDOW_MS },
  })
  const rootKey = await apiKeyFor(gateway, 'root', 'admin')
  const rootId = gateway.auth?.user('root')?.id as string
  const admin = await startClient(t, bootstrap, {}, { apiKey: rootKey })
  const started = Date.now()

  const bobUser = await admin.createUser({ username: 'bob', password: BOB_PW, limits: { rpm: 10 } })
  const bobId = bobUser.id
  await admin.updateUser('bob', { limits: { dailyTokens: 1000 } })
  await admin.updateUser('bob', { role: 'admin' })
  await admin.updateUser('bob', { role: 'user' })
  await admin.updateUser('bob', { disabled: true })
  await admin.updateUser('bob', { disabled: false })
  await admin.call('updateUser', { username: 'bob', password: RESET_PW })

  const bob = await startClient(t, bootstrap)
  const pair = await bob.call<{ accessToken: string; refreshToken: string }>(
    'login',
    { username: 'bob', password: RESET_PW },
    undefined,
    false,
  )
  await bob.login('bob', RESET_PW)
  await bob.changePassword(RESET_PW, CHANGED_PW)
  await bob.login('bob', CHANGED_PW)
  const key = await bob.createKey({ name: 'laptop' })
  await bob.revokeKey(key.id)
  await rejectsWith(t, bob.createUser({ username: 'eve', password: 'eve-password' }), 'ERR_FORBIDDEN')
  await rejectsWith(t, bob.audit(), 'ERR_FORBIDDEN', 'a non-admin may not read the audit log')

  await sleep(5)
  const middle = Date.now()
  await sleep(5)
  const invite = await admin.createInvite({ role: 'gateway' })
  const { id: inviteId, secret: inviteSecret } = decodeInvite(invite.token)
  const joiner = await startClient(t, bootstrap)
  await joiner.call('join', { id: inviteId, secret: inviteSecret, role: 'gateway' }, undefined, false)
  const wrongSecret = `${inviteSecret.slice(0, -2)}xx`
  await rejectsWith(
    t,
    joiner.call('join', { id: inviteId, secret: wrongSecret, role: 'gateway' }, undefined, false),
    'ERR_INVITE_INVALID',
  )
  await admin.revokeInvite(inviteId)

  // Two wrong passwords, then the account is locked for this peer: two refusals.
  const anon = await startClient(t, bootstrap)
  await rejectsWith(t, anon.login('bob', WRONG_PW), 'ERR_AUTH_INVALID')
  await rejectsWith(t, anon.login('bob', WRONG_PW), 'ERR_AUTH_INVALID')
  await rejectsWith(t, anon.login('bob', WRONG_PW), 'ERR_RATE_LIMITED')
  await rejectsWith(t, anon.login('bob', CHANGED_PW), 'ERR_RATE_LIMITED')
  await rejectsWith(t, anon.login(PASSWORD_AS_NAME, 'whatever-password'), 'ERR_AUTH_INVALID')
  // The repeats are written as summaries when their window ends.
  await sleep(WINDOW_MS + 700)

  const page = await admin.audit({ since: started, limit: 1000 })
  t.is(page.more, false)
  const entries = page.entries
  const anonPeer = anon.publicKey.toString('hex').slice(0, 16)
  const expected = [
    ['user.create', rootId, bobId, 'ok'],
    ['user.limits', rootId, bobId, 'ok'],
    ['user.role', rootId, bobId, 'ok'],
    ['user.role', rootId, bobId, 'ok'],
    ['user.disable', rootId, bobId, 'ok'],
    ['user.enable', rootId, bobId, 'ok'],
    ['user.password.reset', rootId, bobId, 'ok'],
    ['user.password.change', bobId, bobId, 'ok'],
    ['key.create', bobId, key.id, 'ok'],
    ['key.revoke', bobId, key.id, 'ok'],
    ['user.create', bobId, null, 'ERR_FORBIDDEN'],
    ['invite.create', rootId, inviteId, 'ok'],
    ['invite.redeem', 'anonymous', inviteId, 'ok'],
    ['invite.redeem', 'anonymous', inviteId, 'ERR_INVITE_INVALID'],
    ['invite.revoke', rootId, inviteId, 'ok'],
    ['auth.login.failed', 'anonymous', bobId, 'ERR_AUTH_INVALID'],
    ['auth.login.locked', 'anonymous', bobId, 'ERR_RATE_LIMITED'],
    ['auth.login.failed', 'anonymous', null, 'ERR_AUTH_INVALID'],
    ['auth.login.failed', 'anonymous', bobId, 'ERR_AUTH_INVALID'],
    ['auth.login.locked', 'anonymous', bobId, 'ERR_RATE_LIMITED'],
  ]
  t.alike(entries.map(facts), expected, 'each action, in order, with actor, target and outcome')
  const d = entries.map((e) => e.details ?? {})
  t.alike(d[0], { username: 'bob', role: 'user', limits: { rpm: 10 } }, 'user.create details')
  t.alike(d[1], { username: 'bob', limits: { rpm: 10, dailyTokens: 1000 } }, 'user.limits: the limits after')
  t.alike(d[2], { username: 'bob', from: 'user', to: 'admin' })
  t.alike(d[3], { username: 'bob', from: 'admin', to: 'user' })
  t.alike(d[8], { user: bobId, name: 'laptop' })
  t.alike(d[10], { username: 'eve', peer: bob.publicKey.toString('hex').slice(0, 16) })
  t.is(d[12].member, joiner.publicKey.toString('hex'), 'the member that joined, by its key')
  t.alike(d[15], { peer: anonPeer }, 'the first failure is written at once, with its peer')
  t.alike(d[16], { scope: 'account-peer', peer: anonPeer }, 'the lockout says what is locked')
  t.alike(d[17], { peer: anonPeer }, 'a name that is no account is not copied (it may be a password)')
  t.is(d[18].repeated, 1, 'the second wrong password: counted in the summary')
  t.is(d[19].repeated, 1, 'the second refusal: counted in the summary')
  t.is(d[18].since, entries[15]?.at, 'the summary says when its window began')
  const ids = entries.map((e) => e.id)
  t.alike([...ids].sort(), ids, 'ids sort in time order')
  t.ok(
    entries.every((e, i) => i === 0 || e.at >= (entries[i - 1] as AuditEntry).at),
    'times never go back',
  )

  // --since, --action, --limit
  const later = await admin.audit({ since: middle })
  t.alike(later.entries.map(facts), expected.slice(11), 'since: only what came after')
  const iso = await admin.audit({ since: new Date(middle).toISOString() })
  t.is(iso.entries.length, expected.length - 11, 'since as an ISO time')
  const users = await admin.audit({ since: started, action: 'user' })
  t.is(users.entries.length, 9, 'action prefix: the user.* entries')
  t.ok(
    users.entries.every((e) => e.action.startsWith('user.')),
    'only user.*',
  )
  const resets = await admin.audit({ since: started, action: 'user.password' })
  t.alike(
    resets.entries.map((e) => e.action),
    ['user.password.reset', 'user.password.change'],
  )
  const last2 = await admin.audit({ since: started, limit: 2 })
  t.alike(last2.entries.map(facts), expected.slice(-2), 'the newest entries, oldest first')
  t.is(last2.more, true, 'and it says older ones match too')
  await rejectsWith(t, admin.audit({ limit: 5000 }), 'ERR_BAD_REQUEST', 'limit past the maximum')
  await rejectsWith(t, admin.audit({ since: 'last tuesday' }), 'ERR_BAD_REQUEST', 'a since that is no time')
  await rejectsWith(t, admin.audit({ action: 'User Create' }), 'ERR_BAD_REQUEST', 'a malformed action')

  // No secret anywhere: not in the entries served, not in the raw Hyperbee.
  const raw: string[] = []
  const bee = await gateway.store.bee('audit')
  for await (const { key, value } of bee.createReadStream({})) raw.push(key, JSON.stringify(value))
  t.is(raw.length, 2 * expected.length, 'the bee holds the entries and nothing else')
  const text = `${JSON.stringify(entries)}\n${raw.join('\n')}`
  const logged = logs()
  t.ok(logged.includes('login failed'), 'the gateway logged at trace level throughout')
  const secrets = {
    'first password': BOB_PW,
    'reset password': RESET_PW,
    'changed password': CHANGED_PW,
    'wrong password': WRONG_PW,
    'password typed as a name': PASSWORD_AS_NAME,
    "root's API key": rootKey,
    "root's API key secret": rootKey.slice(-32),
    "bob's API key": key.key,
    "bob's API key secret": key.key.slice(-32),
    'access JWT': pair.accessToken,
    'refresh token': pair.refreshToken,
    'invite token': invite.token,
    'invite secret': inviteSecret,
  }
  for (const [what, secret] of Object.entries(secrets)) {
    t.ok(secret.length >= 15, `${what} is a real string`)
    t.absent(text.includes(secret), `no ${what} in the audit log`)
    t.absent(text.toLowerCase().includes(secret.toLowerCase()), `…in any case`)
    t.absent(logged.toLowerCase().includes(secret.toLowerCase()), `…nor in the gateway's log lines`)
  }

  // The CLI reads the same log through the gateway; a bad flag is refused before any mesh is joined.
  const via = ['--bootstrap', bootstrap.join(','), '--api-key', rootKey]
  const cli = runFresh(t, ['audit', '--json', '--since', '10m', '--action', 'invite', ...via])
  const bad = runFresh(t, ['audit', '--since', 'yesterday', ...via])
  t.is(await cli.exited, 0, cli.stderr())
  const printed = JSON.parse(cli.stdout()) as { entries: AuditEntry[]; more: boolean }
  t.alike(
    printed.entries,
    later.entries.slice(0, 4),
    'audit --json: the invite entries, as the gateway keeps them',
  )
  t.is(printed.more, false)
  t.is(await bad.exited, 2, '--since yesterday: exit 2')
  const why = "ERR_BAD_REQUEST: --since: a duration like 30m, 12h or 7d, or an ISO time; got 'yesterday'"
  t.ok(bad.stderr().includes(why), bad.stderr())
})

test('audit: a user added by the CLI to the store of a stopped gateway is recorded as done by the CLI', async (t) => {
  const { bootstrap } = await testnet(t)
  const store = await t.tmp()
  const add = runFresh(t, [
    'user',
    'add',
    'carol',
    '--password',
    'carol-password',
    '--admin',
    '--store',
    store,
  ])
  t.is(await add.exited, 0, add.stderr())
  const gateway = await startGateway(t, bootstrap, { store })
  const carolId = gateway.auth?.user('carol')?.id
  const admin = await startClient(t, bootstrap, {}, { apiKey: await apiKeyFor(gateway, 'carol') })
  const { entries } = await admin.audit()
  t.alike(entries.map(facts), [['user.create', 'cli', carolId, 'ok']])
  const human = runFresh(t, [
    'audit',
    '--bootstrap',
    bootstrap.join(','),
    '--api-key',
    await apiKeyFor(gateway, 'carol'),
  ])
  t.is(await human.exited, 0, human.stderr())
  t.is(
    human.stdout(),
    `${new Date(entries[0]?.at as number).toISOString()}  user.create          ok               by cli  on carol (${carolId})  {"username":"carol","role":"admin","via":"store"}\n`,
    'audit without --json: a line an entry, user ids with their names',
  )
  t.alike(entries[0]?.details, { username: 'carol', role: 'admin', via: 'store' })
  t.absent(JSON.stringify(entries).includes('carol-password'))
})

test('audit: processors drained and undrained through the gateway, and a refused drain', async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap)
  const admin = await startClient(t, bootstrap, {}, { apiKey: await apiKeyFor(gateway, 'root', 'admin') })
  const user = await startClient(t, bootstrap, {}, { apiKey: await apiKeyFor(gateway, 'dave', 'user') })
  const rootId = gateway.auth?.user('root')?.id
  const daveId = gateway.auth?.user('dave')?.id
  const p = await spawnProcessor(t, bootstrap, ['--store', await t.tmp(), '--backend', 'echo'])
  t.ok(await until(() => gateway.router.size === 1), 'the processor is seen')
  await rejectsWith(t, user.drainProcessor(p.publicKey.slice(0, 12)), 'ERR_FORBIDDEN')
  await admin.drainProcessor(p.publicKey.slice(0, 12))
  await admin.drainProcessor(p.publicKey, false)
  const { entries } = await admin.audit({ action: 'processor' })
  t.alike(entries.map(facts), [
    ['processor.drain', daveId, p.publicKey.slice(0, 12), 'ERR_FORBIDDEN'],
    ['processor.drain', rootId, p.publicKey, 'ok'],
    ['processor.undrain', rootId, p.publicKey, 'ok'],
  ])
  t.alike(entries[1]?.details, { active: 0 })
})
