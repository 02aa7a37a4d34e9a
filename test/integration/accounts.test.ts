import { spawnSync } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import test from 'brittle'
import jwt from 'jsonwebtoken'
import { TINY_MODEL_NAME, writeTinyModel } from '../../facilities/tiny-model/tiny-model.js'
import type { MeshError } from '../../kernel/errors.js'
import type { MeshClient } from '../../workers/client/client.worker.js'
import { rejectsWith } from '../helpers/assert.js'
import {
  apiKeyFor,
  BIN,
  FAST_REGISTRY,
  passwordOf,
  spawnProcessor,
  spawnWorker,
  startClient,
  startGateway,
  TEST_AUTH,
  testnet,
  until,
} from '../helpers/mesh.js'

const SECRET = 'a-test-secret-that-is-long-enough-for-hs256'
const STEP1_TEXT = 'defghijklmnopqrstuvwxyz'

async function waitForProcessors(client: MeshClient, n = 1): Promise<boolean> {
  return until(async () => (await client.status()).processors.length >= n)
}

function base64url(v: object): string {
  return Buffer.from(JSON.stringify(v)).toString('base64url')
}

test('accounts: register, login, refresh, logout, and bad tokens of every kind', async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, {
    auth: { registration: 'open', jwtSecret: SECRET, accessTtlSec: 60 },
  })
  const anon = await startClient(t, bootstrap)

  await rejectsWith(t, anon.models(), 'ERR_AUTH_REQUIRED', 'no credential, no models')
  const alice = await anon.register('Alice', 'correct horse battery')
  t.is(alice.username, 'alice', 'names are case-insensitive, kept lower case')
  t.is(alice.role, 'user')
  await rejectsWith(t, anon.register('alice', 'another password'), 'ERR_CONFLICT', 'name taken')
  await rejectsWith(t, anon.register('bob', 'short'), 'ERR_BAD_REQUEST', 'password too short')
  await rejectsWith(t, anon.login('alice', 'wrong password!'), 'ERR_AUTH_INVALID', 'wrong password')
  await rejectsWith(t, anon.login('nobody', 'whatever password'), 'ERR_AUTH_INVALID', 'unknown user')

  const client = await startClient(t, bootstrap)
  const me = await client.login('alice', 'correct horse battery')
  t.is(me.username, 'alice')
  const who = await client.whoami()
  t.is(who.user.username, 'alice')
  t.is(who.via, 'token')
  t.is(who.limits.rpm?.limit, 600, 'default rpm applies')

  // Refresh rotates: the old refresh token is dead afterwards, and reusing it kills the family.
  const pair = await client.call<{ accessToken: string; refreshToken: string }>(
    'login',
    { username: 'alice', password: 'correct horse battery' },
    undefined,
    false,
  )
  const next = await client.call<{ accessToken: string; refreshToken: string }>(
    'refresh',
    { refreshToken: pair.refreshToken },
    undefined,
    false,
  )
  t.not(next.refreshToken, pair.refreshToken, 'a new refresh token')
  await rejectsWith(
    t,
    client.call('refresh', { refreshToken: pair.refreshToken }, undefined, false),
    'ERR_AUTH_INVALID',
    'a rotated refresh token is refused',
  )
  await rejectsWith(
    t,
    client.call('refresh', { refreshToken: next.refreshToken }, undefined, false),
    'ERR_AUTH_INVALID',
    'reuse revoked the whole family',
  )

  // Forged and broken access tokens, sent where a credential goes.
  const claims = { name: 'alice', role: 'admin', ver: 0, typ: 'access' }
  const signOpts = { subject: me.id, issuer: 'llm-mesh', audience: 'llm-mesh', jwtid: 'abcdef0123456789' }
  const forged = {
    'another secret': jwt.sign(claims, 'not-the-gateway-secret-but-long-enough', {
      ...signOpts,
      expiresIn: 60,
    }),
    'alg none': `${base64url({ alg: 'none', typ: 'JWT' })}.${base64url({
      ...claims,
      sub: me.id,
      iss: 'llm-mesh',
      aud: 'llm-mesh',
      jti: 'x',
      exp: Math.floor(Date.now() / 1000) + 60,
    })}.`,
    expired: jwt.sign({ ...claims, exp: Math.floor(Date.now() / 1000) - 10 }, SECRET, signOpts),
    'wrong audience': jwt.sign(claims, SECRET, { ...signOpts, audience: 'someone-else', expiresIn: 60 }),
    'HS384 with the right secret': jwt.sign(claims, SECRET, {
      ...signOpts,
      expiresIn: 60,
      algorithm: 'HS384',
    }),
  }
  const good = jwt.sign({ ...claims, role: 'user' }, SECRET, { ...signOpts, expiresIn: 60 })
  const [h, p, s] = good.split('.') as [string, string, string]
  const payload = JSON.parse(Buffer.from(p, 'base64url').toString())
  const tampered = `${h}.${base64url({ ...payload, role: 'admin' })}.${s}`
  const probe = await startClient(t, bootstrap)
  probe.useApiKey(good)
  t.is((await probe.whoami()).user.username, 'alice', 'a well-made token with the secret works')
  for (const [what, token] of [...Object.entries(forged), ['tampered payload', tampered] as const]) {
    probe.useApiKey(token)
    await rejectsWith(t, probe.whoami(), 'ERR_AUTH_INVALID', what)
  }
  probe.useApiKey('lmk_0123456789abcdef_notarealsecretnotarealsecret')
  await rejectsWith(t, probe.models(), 'ERR_AUTH_INVALID', 'unknown API key')

  // Logout ends the access token at once, and its refresh token.
  await client.logout()
  probe.useApiKey(pair.accessToken)
  t.ok((await probe.whoami()).user, 'another session is unaffected')
  const session = await client.call<{ accessToken: string; refreshToken: string }>(
    'login',
    { username: 'alice', password: 'correct horse battery' },
    undefined,
    false,
  )
  probe.useApiKey(session.accessToken)
  await probe.call('logout', { refreshToken: session.refreshToken })
  await rejectsWith(t, probe.whoami(), 'ERR_AUTH_INVALID', 'logged-out access token refused')
  await rejectsWith(
    t,
    probe.call('refresh', { refreshToken: session.refreshToken }, undefined, false),
    'ERR_AUTH_INVALID',
    'logged-out refresh token refused',
  )

  // Password change: old tokens die, the new password works.
  await client.login('alice', 'correct horse battery')
  const before = await client.call<{ accessToken: string }>(
    'login',
    { username: 'alice', password: 'correct horse battery' },
    undefined,
    false,
  )
  await client.changePassword('correct horse battery', 'a brand new password')
  probe.useApiKey(before.accessToken)
  await rejectsWith(t, probe.whoami(), 'ERR_AUTH_INVALID', 'tokens from before the change are refused')
  await rejectsWith(t, client.login('alice', 'correct horse battery'), 'ERR_AUTH_INVALID', 'old password')
  t.ok(await client.login('alice', 'a brand new password'), 'new password')
  t.ok(gateway.opened)
})

test('accounts: keys, roles and who may see what', async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap)
  const admin = await startClient(t, bootstrap, {}, { apiKey: await apiKeyFor(gateway, 'root', 'admin') })
  const anon = await startClient(t, bootstrap)
  await rejectsWith(
    t,
    anon.register('mallory', 'password1234'),
    'ERR_FORBIDDEN',
    'registration closed by default',
  )

  await admin.createUser({ username: 'bob', password: 'bob-password', limits: { rpm: 10 } })
  await admin.createUser({ username: 'carol', password: 'carol-password' })
  const bob = await startClient(t, bootstrap)
  await bob.login('bob', 'bob-password')
  const carol = await startClient(t, bootstrap)
  await carol.login('carol', 'carol-password')

  // Non-admins cannot use admin methods.
  await rejectsWith(t, bob.listUsers(), 'ERR_FORBIDDEN', 'listUsers')
  await rejectsWith(
    t,
    bob.createUser({ username: 'eve', password: 'eve-password' }),
    'ERR_FORBIDDEN',
    'createUser',
  )
  await rejectsWith(t, bob.updateUser('bob', { role: 'admin' }), 'ERR_FORBIDDEN', 'updateUser')
  await rejectsWith(t, bob.usage({ user: 'carol' }), 'ERR_FORBIDDEN', "another user's usage")
  await rejectsWith(t, bob.listKeys('carol'), 'ERR_FORBIDDEN', "another user's keys")
  await rejectsWith(t, bob.createKey({ name: 'x', user: 'carol' }), 'ERR_FORBIDDEN', 'a key for someone else')
  t.is((await bob.usage()).user, 'bob', 'own usage is fine')
  t.is((await admin.usage({ user: 'carol' })).user, 'carol', 'admins may read anyone')
  t.alike(
    (await admin.listUsers()).map((u) => u.username),
    ['bob', 'carol', 'root'],
  )

  // API keys: shown once, listed without secret, usable, revocable; scoped to models.
  const made = await bob.createKey({ name: 'laptop', models: ['echo'] })
  t.ok(made.key.startsWith(`lmk_${made.id}_`), 'key format')
  const listed = await bob.listKeys()
  t.is(listed.length, 1)
  // The secret is all after `lmk_<id>_`: base64url, so it may hold '_' itself.
  const secret = made.key.slice(`lmk_${made.id}_`.length)
  t.is(secret.length, 32)
  t.absent(JSON.stringify(listed).includes(secret), 'listing never shows the secret')
  const viaKey = await startClient(t, bootstrap, {}, { apiKey: made.key })
  const who = await viaKey.whoami()
  t.is(who.user.username, 'bob')
  t.is(who.via, 'apiKey')
  t.alike(who.models, ['echo'])
  await rejectsWith(
    t,
    viaKey.generate({ model: 'some-other-model', prompt: 'x' }),
    'ERR_FORBIDDEN',
    'a model outside the key allow-list',
  )
  await rejectsWith(t, carol.revokeKey(made.id), 'ERR_NOT_FOUND', "another user's key cannot be revoked")
  await rejectsWith(
    t,
    viaKey.createKey({ name: 'escape' }),
    'ERR_FORBIDDEN',
    'a model-restricted key cannot mint an unrestricted one',
  )
  await rejectsWith(t, viaKey.revokeKey(made.id), 'ERR_FORBIDDEN', 'nor manage keys at all')
  const latest = await bob.createKey({ name: 'tagged', models: ['echo:latest'] })
  const viaLatest = await startClient(t, bootstrap, {}, { apiKey: latest.key })
  t.alike((await viaLatest.whoami()).models, ['echo'], "':latest' is the same model")
  await bob.revokeKey(latest.id)
  await bob.revokeKey(made.id)
  await rejectsWith(t, viaKey.whoami(), 'ERR_AUTH_INVALID', 'revoked key refused')

  // Disabling a user ends their sessions and keys at once.
  const carolKey = await carol.createKey({ name: 'ci' })
  const carolViaKey = await startClient(t, bootstrap, {}, { apiKey: carolKey.key })
  t.ok(await carolViaKey.whoami())
  await admin.updateUser('carol', { disabled: true })
  await rejectsWith(t, carol.whoami(), 'ERR_AUTH_INVALID', 'token of a disabled user')
  await rejectsWith(t, carolViaKey.whoami(), 'ERR_AUTH_INVALID', 'key of a disabled user')
  await rejectsWith(t, carol.login('carol', 'carol-password'), 'ERR_FORBIDDEN', 'disabled user cannot log in')
  await admin.updateUser('carol', { disabled: false })
  t.ok(await carolViaKey.whoami(), 'enabled again: the key works again')

  // Admin limit overrides show up where the user can see them.
  await admin.updateUser('bob', { limits: { dailyTokens: 1000, rpm: null } })
  const limits = (await bob.whoami()).limits
  t.is(limits.dailyTokens?.limit, 1000)
  t.is(limits.rpm?.limit, null, 'null removes a limit')
})

test('accounts: login is not a free brute-force oracle', async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, {
    auth: { maxFailuresPerAccount: 3, maxFailuresPerPeer: 5 },
  })
  await apiKeyFor(gateway, 'victim', 'user')
  await apiKeyFor(gateway, 'other', 'user')
  const attacker = await startClient(t, bootstrap)
  for (let i = 0; i < 3; i++)
    await rejectsWith(t, attacker.login('victim', `guess-${i}-guess`), 'ERR_AUTH_INVALID')
  const locked = await rejectsWith(
    t,
    attacker.login('victim', passwordOf('victim')),
    'ERR_RATE_LIMITED',
    'locked account: even the right password is refused',
  )
  t.ok(Number(locked?.details?.retryAfterMs) > 0, 'says when to retry')
  // A stranger's guesses lock the stranger out, not the owner (they only space the account's
  // checks out): the owner signs in from another peer.
  const owner = await startClient(t, bootstrap)
  t.ok(await owner.login('victim', passwordOf('victim')), "a stranger's failures do not lock the owner out")
  t.ok(await owner.login('other', passwordOf('other')), 'other accounts are unaffected')

  // Per peer: failures across many accounts.
  for (let i = 0; i < 2; i++)
    await rejectsWith(t, attacker.login(`nobody${i}`, 'some-guess-1'), 'ERR_AUTH_INVALID')
  await rejectsWith(
    t,
    attacker.login('other', passwordOf('other')),
    'ERR_RATE_LIMITED',
    'the peer is refused after 5 failures in all',
  )
  t.ok(await owner.login('other', passwordOf('other')), 'another peer still can')
})

test('limits: 200 concurrent requests against 50 rpm admit exactly 50', { timeout: 120_000 }, async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap)
  await spawnProcessor(t, bootstrap, ['--store', await t.tmp(), '--backend', 'echo', '--parallel', '64'])
  const key = await apiKeyFor(gateway, 'dave', 'user', { rpm: 50 })
  const client = await startClient(t, bootstrap, {}, { apiKey: key })
  t.ok(await waitForProcessors(client))

  const results = await Promise.allSettled(
    Array.from({ length: 200 }, (_, i) => client.generate({ model: 'echo', prompt: `hello ${i}` })),
  )
  const ok = results.filter((r) => r.status === 'fulfilled')
  const limited = results.filter(
    (r) => r.status === 'rejected' && (r.reason as MeshError).code === 'ERR_RATE_LIMITED',
  )
  t.is(ok.length, 50, 'exactly 50 admitted')
  t.is(limited.length, 150, 'the other 150 are ERR_RATE_LIMITED')
  await rejectsWith(t, client.generate({ model: 'no-such-model', prompt: 'x' }), 'ERR_MODEL_NOT_FOUND')
  const first = (limited[0] as PromiseRejectedResult).reason as MeshError
  const retry = Number(first.details?.retryAfterMs)
  t.ok(retry > 0 && retry <= 60_000, `retry after ${retry} ms`)

  // The ledger holds exactly the admitted ones, with the backend's counts.
  const usage = await client.usage()
  t.is(usage.today.requests, 50, 'a request for a model nobody serves is refused before it counts')
  t.absent(
    usage.rows.some((r) => r.model === 'no-such-model'),
    'and leaves nothing in the ledger',
  )
  const expected = ok.reduce(
    (n, r) => n + (r as PromiseFulfilledResult<{ completionTokens: number }>).value.completionTokens,
    0,
  )
  t.is(usage.today.completionTokens, expected, 'completion tokens as the backend counted them')

  // A key's own rpm is enforced on top of the user's.
  const limitedKey = await startClient(t, bootstrap)
  const admin = await startClient(t, bootstrap, {}, { apiKey: await apiKeyFor(gateway) })
  const k = await admin.createKey({ name: 'slow', user: 'dave', limits: { rpm: 2 } })
  limitedKey.useApiKey(k.key)
  await gateway.auth?.updateUser('dave', { limits: { rpm: null } })
  await limitedKey.generate({ model: 'echo', prompt: 'a' })
  await limitedKey.generate({ model: 'echo', prompt: 'b' })
  const e = await rejectsWith(t, limitedKey.generate({ model: 'echo', prompt: 'c' }), 'ERR_RATE_LIMITED')
  t.is(e?.details?.scope, 'key', 'the key limit, not the user one')
})

test('limits: tokens per minute and per day, with real token counts from llama.cpp', {
  timeout: 120_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const models = await t.tmp()
  await writeTinyModel(join(models, `${TINY_MODEL_NAME}.gguf`))
  const gateway = await startGateway(t, bootstrap)
  await spawnProcessor(t, bootstrap, ['--store', await t.tmp(), '--models', models, '--backend', 'llamacpp'])
  // 'abc' as a chat costs 4 prompt tokens (<s> a b c) + 23 completion tokens = 27.
  const ask = (c: MeshClient) =>
    c.chat({
      model: TINY_MODEL_NAME,
      messages: [{ role: 'user', content: 'abc' }],
      options: { temperature: 0 },
    })

  const tpmClient = await startClient(
    t,
    bootstrap,
    {},
    { apiKey: await apiKeyFor(gateway, 'erin', 'user', { tpm: 50 }) },
  )
  t.ok(await waitForProcessors(tpmClient))
  const r1 = await ask(tpmClient)
  t.is(r1.text, STEP1_TEXT)
  t.is(r1.promptTokens + r1.completionTokens, 27, 'real counts: 4 + 23')
  await ask(tpmClient) // 27 < 50: admitted, the window now holds 54
  const tpm = await rejectsWith(t, ask(tpmClient), 'ERR_RATE_LIMITED', '54 tokens in the last minute >= 50')
  t.is(tpm?.details?.limit, 'tpm')

  const dayClient = await startClient(
    t,
    bootstrap,
    {},
    {
      apiKey: await apiKeyFor(gateway, 'frank', 'user', { dailyTokens: 60 }),
    },
  )
  await ask(dayClient)
  await ask(dayClient)
  await ask(dayClient) // 54 < 60: admitted; now 81
  const quota = await rejectsWith(t, ask(dayClient), 'ERR_QUOTA_EXCEEDED', 'daily tokens spent')
  const retry = Number(quota?.details?.retryAfterMs)
  const now = new Date()
  const midnight = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1)
  t.ok(Math.abs(Date.now() + retry - midnight) < 5_000, 'retry at the next UTC midnight')
  const usage = await dayClient.usage()
  t.is(usage.today.promptTokens + usage.today.completionTokens, 81, 'the ledger agrees: 3 x 27')
  t.is(usage.today.requests, 3, 'refused requests are not recorded')
})

test('ledger: usage survives kill -9 of the gateway right after the answers, without duplicates', {
  timeout: 180_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const store = await t.tmp()
  const confDir = await t.tmp()
  const config = join(confDir, 'gateway.json')
  await writeFile(config, JSON.stringify({ auth: TEST_AUTH, registry: FAST_REGISTRY }))
  // The first admin of a standalone gateway, made offline on its store.
  const made = spawnSync(
    process.execPath,
    [
      BIN,
      'user',
      'add',
      'grace',
      '--password',
      'grace-password',
      '--admin',
      '--store',
      store,
      '--config',
      config,
    ],
    { encoding: 'utf8' },
  )
  t.is(made.status, 0, made.stderr)
  const startGatewayChild = () => spawnWorker(t, 'gateway', bootstrap, ['--store', store, '--config', config])

  const first = await startGatewayChild()
  await spawnProcessor(t, bootstrap, ['--store', await t.tmp(), '--backend', 'echo', '--parallel', '16'])
  const client = await startClient(t, bootstrap, { gateway: first.publicKey })
  await client.login('grace', 'grace-password')
  t.ok(await waitForProcessors(client))

  const N = 120
  const prompts = Array.from({ length: N }, (_, i) => `request number ${i} ${'x'.repeat(i % 7)}`)
  const answers = await Promise.all(prompts.map((prompt) => client.generate({ model: 'echo', prompt })))
  await first.kill() // SIGKILL the moment the last answer arrived
  const ids = new Set(answers.map((a) => a.requestId))
  t.is(ids.size, N, 'every answer carries its own request id')
  const prompt = answers.reduce((n, a) => n + a.promptTokens, 0)
  const completion = answers.reduce((n, a) => n + a.completionTokens, 0)

  const second = await startGatewayChild()
  t.is(second.publicKey, first.publicKey, 'same store, same key')
  const again = await startClient(t, bootstrap, { gateway: second.publicKey })
  await again.login('grace', 'grace-password')
  const usage = await again.usage({ records: true, limit: 10_000 })
  t.is(usage.today.requests, N, 'every request is in the counters')
  t.is(usage.today.promptTokens, prompt, 'prompt tokens = sum of the answers')
  t.is(usage.today.completionTokens, completion, 'completion tokens = sum of the answers')
  const records = usage.records ?? []
  t.is(records.length, N, 'one record per request')
  t.alike(new Set(records.map((r) => r.id)), ids, 'the same request ids, no duplicates')
  t.ok(
    records.every((r) => r.status === 'ok' && r.model === 'echo' && r.processor),
    'records carry status, model and processor',
  )
})

test('accounts: a gateway with auth disabled forwards without identity, limits or ledger', async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, { auth: { enabled: false } })
  await spawnProcessor(t, bootstrap, ['--store', await t.tmp(), '--backend', 'echo'])
  const client = await startClient(t, bootstrap)
  t.ok(await waitForProcessors(client))
  t.is((await client.generate({ model: 'echo', prompt: 'open mesh' })).text, 'open mesh')
  await rejectsWith(t, client.login('x', 'whatever-password'), 'ERR_UNAVAILABLE', 'no accounts to log in to')
  t.is(gateway.usage, null)
})
