import test from 'brittle'
import jwt from 'jsonwebtoken'
import { rejectsWith } from '../helpers/assert.js'
import { apiKeyFor, passwordOf, spawnProcessor, startClient, startGateway, testnet } from '../helpers/mesh.js'
import { waitForProcessors } from './accounts-fixture.js'

const SECRET = 'a-test-secret-that-is-long-enough-for-hs256'

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
