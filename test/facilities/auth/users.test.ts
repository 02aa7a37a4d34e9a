import test from 'brittle'
import { MeshError } from '../../../kernel/errors.js'
import { rejectsWith } from '../../helpers/assert.js'
import { codeOf, openAuth } from './fixture.js'

test('auth: createUser validates names, passwords and limits, and refuses duplicates', async (t) => {
  const { auth } = await openAuth(t)
  const badNames: unknown[] = [
    '',
    ' ',
    '-lead',
    '.lead',
    '_lead',
    'a b',
    'a/b',
    'ü',
    'a'.repeat(65),
    42,
    undefined,
    null,
  ]
  for (const username of badNames) {
    await rejectsWith(
      t,
      auth.createUser({ username, password: 'long enough' }),
      'ERR_BAD_REQUEST',
      `username ${JSON.stringify(username)}`,
    )
  }
  await rejectsWith(t, auth.createUser({ username: 'x', password: '1234567' }), 'ERR_BAD_REQUEST', '7 chars')
  await rejectsWith(
    t,
    auth.createUser({ username: 'x', password: 'p'.repeat(1025) }),
    'ERR_BAD_REQUEST',
    '1025 chars',
  )
  await rejectsWith(t, auth.createUser({ username: 'x', password: 12345678 }), 'ERR_BAD_REQUEST', 'a number')
  await rejectsWith(
    t,
    auth.createUser({ username: 'x', password: 'long enough', limits: { rpm: 0 } }),
    'ERR_BAD_REQUEST',
    'rpm 0',
  )
  await rejectsWith(
    t,
    auth.createUser({ username: 'x', password: 'long enough', limits: { burst: 5 } }),
    'ERR_BAD_REQUEST',
    'unknown limit',
  )
  t.is(auth.userCount, 0, 'nothing was created')

  const created = await auth.createUser({
    username: 'Carol.X_1-2',
    password: '12345678',
    limits: { rpm: 5, dailyTokens: null },
  })
  t.is(created.username, 'carol.x_1-2', 'lower-cased')
  t.is(created.role, 'user')
  t.alike(created.limits, { rpm: 5, dailyTokens: null })
  t.is(created.disabled, false)
  t.ok(/^[0-9a-f]{16}$/.test(created.id), created.id)
  t.absent((created as unknown as Record<string, unknown>).passwordHash, 'no hash in the public user')
  t.is((await auth.createUser({ username: 'a'.repeat(64), password: 'p'.repeat(1024) })).username.length, 64)
  const admin = await auth.createUser({ username: 'root', password: 'long enough', role: 'admin' })
  t.is(admin.role, 'admin')

  await rejectsWith(t, auth.createUser({ username: 'root', password: 'another one' }), 'ERR_CONFLICT')
  await rejectsWith(t, auth.createUser({ username: 'CAROL.x_1-2', password: 'another one' }), 'ERR_CONFLICT')
  const race = await Promise.allSettled([
    auth.createUser({ username: 'dup', password: 'password-1' }),
    auth.createUser({ username: 'dup', password: 'password-2' }),
    auth.createUser({ username: 'DUP', password: 'password-3' }),
  ])
  t.is(race.filter((r) => r.status === 'fulfilled').length, 1, 'concurrent creates: one wins')
  t.alike(
    race.filter((r) => r.status === 'rejected').map((r) => MeshError.from(r.reason).code),
    ['ERR_CONFLICT', 'ERR_CONFLICT'],
  )
  t.is(auth.userCount, 4)
  t.alike(
    auth.listUsers().map((u) => u.username),
    ['a'.repeat(64), 'carol.x_1-2', 'dup', 'root'],
  )
})

test('auth: disabling a user ends its tokens and API keys at once', async (t) => {
  const { auth } = await openAuth(t)
  const alice = await auth.createUser({ username: 'alice', password: 'alice password' })
  const bob = await auth.createUser({ username: 'bob', password: 'bob password' })
  const session = await auth.login('alice', 'alice password', 'p')
  const key = await auth.createKey(alice.id, { name: 'k' })
  const bobKey = await auth.createKey(bob.id, { name: 'k' })
  // Both verified (and cached) before the change.
  t.is(auth.authenticate(session.accessToken).userId, alice.id)
  t.is(auth.authenticate(key.key).userId, alice.id)

  // A change of limits only keeps tokens.
  await auth.updateUser('alice', { limits: { rpm: 3 } })
  t.is(auth.authenticate(session.accessToken).userId, alice.id, 'limits change: token still valid')

  const updated = await auth.updateUser('alice', { disabled: true })
  t.is(updated.disabled, true)
  t.is(
    codeOf(() => auth.authenticate(session.accessToken)),
    'ERR_AUTH_INVALID',
    'access token',
  )
  t.is(
    codeOf(() => auth.authenticate(key.key)),
    'ERR_AUTH_INVALID',
    'API key',
  )
  await rejectsWith(t, auth.refresh(session.refreshToken), 'ERR_AUTH_INVALID', 'refresh token')
  await rejectsWith(t, auth.login('alice', 'alice password', 'p'), 'ERR_FORBIDDEN', 'login')
  t.is(auth.authenticate(bobKey.key).userId, bob.id, 'other users unaffected')

  await auth.updateUser('alice', { disabled: false })
  t.is(
    codeOf(() => auth.authenticate(session.accessToken)),
    'ERR_AUTH_INVALID',
    're-enabled: tokens from before the disable stay dead',
  )
  const fresh = await auth.login('alice', 'alice password', 'p')
  t.is(auth.authenticate(fresh.accessToken).userId, alice.id, 're-enabled: a new login works')
  await rejectsWith(t, auth.updateUser('nobody', { disabled: true }), 'ERR_NOT_FOUND')
})

test('auth: a role change ends tokens issued under the old role; keys follow the role', async (t) => {
  const { auth } = await openAuth(t)
  const alice = await auth.createUser({ username: 'alice', password: 'alice password' })
  const session = await auth.login('alice', 'alice password', 'p')
  const key = await auth.createKey(alice.id, { name: 'k' })
  t.is(auth.authenticate(key.key).role, 'user')
  await auth.updateUser('alice', { role: 'admin' })
  t.is(
    codeOf(() => auth.authenticate(session.accessToken)),
    'ERR_AUTH_INVALID',
  )
  t.is(auth.authenticate(key.key).role, 'admin')
  const fresh = await auth.login('alice', 'alice password', 'p')
  t.is(auth.authenticate(fresh.accessToken).role, 'admin')
})

test('auth: changePassword invalidates old tokens and the old password', async (t) => {
  const { auth } = await openAuth(t)
  const alice = await auth.createUser({ username: 'alice', password: 'old password' })
  const session = await auth.login('alice', 'old password', 'p')
  const me = auth.authenticate(session.accessToken)
  t.is(me.userId, alice.id)
  await rejectsWith(t, auth.changePassword(me, 'wrong password', 'new password', 'p'), 'ERR_AUTH_INVALID')
  await rejectsWith(t, auth.changePassword(me, 'old password', 'short', 'p'), 'ERR_BAD_REQUEST')
  await rejectsWith(t, auth.changePassword(me, undefined, 'new password', 'p'), 'ERR_AUTH_INVALID')
  t.is(auth.authenticate(session.accessToken).userId, alice.id, 'failed changes change nothing')

  await auth.changePassword(me, 'old password', 'new password', 'p')
  t.is(
    codeOf(() => auth.authenticate(session.accessToken)),
    'ERR_AUTH_INVALID',
    'old access token',
  )
  await rejectsWith(t, auth.refresh(session.refreshToken), 'ERR_AUTH_INVALID', 'old refresh token')
  await rejectsWith(t, auth.login('alice', 'old password', 'p'), 'ERR_AUTH_INVALID', 'old password')
  const fresh = await auth.login('alice', 'new password', 'p')
  t.is(auth.authenticate(fresh.accessToken).userId, alice.id, 'new password and token work')

  // The admin reset does the same.
  await auth.setPassword('alice', 'reset password')
  t.is(
    codeOf(() => auth.authenticate(fresh.accessToken)),
    'ERR_AUTH_INVALID',
  )
  t.ok((await auth.login('alice', 'reset password', 'p')).accessToken)
})
