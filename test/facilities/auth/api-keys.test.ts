import test from 'brittle'
import { rejectsWith, thrown } from '../../helpers/assert.js'
import { codeOf, DAY_MS, openAuth, sleep } from './fixture.js'

test('auth: revokeKey rejects the key; only the owner or an admin may revoke', async (t) => {
  const { auth } = await openAuth(t)
  const alice = await auth.createUser({ username: 'alice', password: 'alice password' })
  const bob = await auth.createUser({ username: 'bob', password: 'bob password' })
  const aliceKey = await auth.createKey(alice.id, { name: 'a' })
  const bobKey = await auth.createKey(bob.id, { name: 'b' })
  t.is(auth.authenticate(aliceKey.key).keyId, aliceKey.id, 'verified and cached')

  const revoked = await auth.revokeKey(aliceKey.id, alice.id)
  t.ok(revoked.revokedAt && !Number.isNaN(Date.parse(revoked.revokedAt)))
  t.is(
    codeOf(() => auth.authenticate(aliceKey.key)),
    'ERR_AUTH_INVALID',
    'revoked key rejected',
  )
  t.alike(await auth.revokeKey(aliceKey.id, alice.id), revoked, 'revoking twice changes nothing')

  await rejectsWith(t, auth.revokeKey(bobKey.id, alice.id), 'ERR_NOT_FOUND', "another user's key")
  t.is(auth.authenticate(bobKey.key).keyId, bobKey.id, "bob's key still works")
  await rejectsWith(t, auth.revokeKey('0123456789abcdef', alice.id), 'ERR_NOT_FOUND', 'unknown id')
  await rejectsWith(t, auth.revokeKey(undefined, alice.id), 'ERR_NOT_FOUND', 'no id')
  await auth.revokeKey(bobKey.id, alice.id, true)
  t.is(
    codeOf(() => auth.authenticate(bobKey.key)),
    'ERR_AUTH_INVALID',
    'an admin may revoke it',
  )
})

test('auth: expired API keys are rejected', async (t) => {
  const { auth } = await openAuth(t)
  const alice = await auth.createUser({ username: 'alice', password: 'alice password' })
  const before = Date.now()
  const key = await auth.createKey(alice.id, { name: 'day', expiresInDays: 1 })
  const expiresAt = Date.parse(key.expiresAt as string)
  t.ok(expiresAt >= before + DAY_MS && expiresAt <= Date.now() + DAY_MS, key.expiresAt ?? 'no expiry')
  t.is(auth.authenticate(key.key).expiresAt, expiresAt, 'valid now')
  t.is(auth.authenticate(key.key, expiresAt - 1).keyId, key.id, 'valid until the last ms')
  const e = thrown(() => auth.authenticate(key.key, expiresAt))
  t.is(e?.code, 'ERR_AUTH_INVALID', 'expired at expiresAt')
  t.is(e?.details?.reason, 'expired')
  t.is(
    codeOf(() => auth.authenticate(key.key, before + 2 * DAY_MS)),
    'ERR_AUTH_INVALID',
    'two days later',
  )

  // With the real clock: a key of ~0.2 s.
  const short = await auth.createKey(alice.id, { name: 'short', expiresInDays: 200 / DAY_MS })
  t.is(auth.authenticate(short.key).keyId, short.id)
  await sleep(300)
  t.is(
    codeOf(() => auth.authenticate(short.key)),
    'ERR_AUTH_INVALID',
    'expired by the clock',
  )
})

test('auth: a key made with an API key expires no later than that key', async (t) => {
  const { auth } = await openAuth(t)
  const alice = await auth.createUser({ username: 'alice', password: 'alice password' })
  const day = await auth.createKey(alice.id, { name: 'day', expiresInDays: 1 })
  const viaDay = auth.authenticate(day.key)
  const child = await auth.createKey(alice.id, { name: 'forever?' }, viaDay)
  t.is(child.expiresAt, day.expiresAt, "asked for no expiry: gets the parent key's")
  t.is((await auth.createKey(alice.id, { name: 'long', expiresInDays: 10 }, viaDay)).expiresAt, day.expiresAt)
  const half = await auth.createKey(alice.id, { name: 'half', expiresInDays: 0.5 }, viaDay)
  t.ok(Date.parse(half.expiresAt as string) < Date.parse(day.expiresAt as string), 'a shorter one is kept')
  t.is(
    auth.authenticate(child.key, Date.parse(day.expiresAt as string) - 1).keyId,
    child.id,
    'valid until then',
  )
  t.is(
    codeOf(() => auth.authenticate(child.key, Date.parse(day.expiresAt as string))),
    'ERR_AUTH_INVALID',
    'the child expires with the parent',
  )

  const forever = auth.authenticate((await auth.createKey(alice.id, { name: 'forever' })).key)
  t.is(
    (await auth.createKey(alice.id, { name: 'c' }, forever)).expiresAt,
    null,
    'a parent without expiry imposes none',
  )
  const session = auth.authenticate((await auth.login('alice', 'alice password', 'p')).accessToken)
  t.is((await auth.createKey(alice.id, { name: 'c2' }, session)).expiresAt, null, 'nor does a login session')
})
