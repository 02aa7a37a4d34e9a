import test from 'brittle'
import { AUTH_BEE } from '../../../facilities/auth/auth.facility.js'
import { rejectsWith } from '../../helpers/assert.js'
import { codeOf, opaque, openAuth, sha256hex } from './fixture.js'

test('auth: API keys, refresh tokens and passwords are stored only as hashes', async (t) => {
  const { auth, store } = await openAuth(t)
  const password = 'a very distinctive password 7431'
  const alice = await auth.createUser({ username: 'alice', password })
  const key = await auth.createKey(alice.id, { name: 'k' })
  const session = await auth.login('alice', password, 'p')
  const rotated = await auth.refresh(session.refreshToken)
  const keySecret = opaque(key.key).secret
  const refresh = opaque(rotated.refreshToken)

  const bee = await store.bee(AUTH_BEE)
  const entries: Array<{ key: string; value: unknown }> = []
  for await (const e of bee.createReadStream()) entries.push({ key: e.key, value: e.value })
  const keys = entries.map((e) => e.key)
  t.ok(keys.includes('users/alice'), 'the user is stored')
  t.ok(keys.includes(`keys/${key.id}`), 'the key is stored')
  t.ok(keys.includes(`refresh/${refresh.id}`), 'the refresh token is stored')

  const all = JSON.stringify(entries)
  for (const [what, secret] of [
    ['password', password],
    ['API key', key.key],
    ['API key secret', keySecret],
    ['refresh token', rotated.refreshToken],
    ['refresh secret', refresh.secret],
    ['first refresh secret', opaque(session.refreshToken).secret],
    ['access token', rotated.accessToken],
  ] as const) {
    t.absent(all.includes(secret), `no ${what} in clear`)
  }
  const keyRec = entries.find((e) => e.key === `keys/${key.id}`)?.value as { hash: string }
  t.is(keyRec.hash, sha256hex(keySecret), 'the key is stored as its SHA-256')
  const refreshRec = entries.find((e) => e.key === `refresh/${refresh.id}`)?.value as { hash: string }
  t.is(refreshRec.hash, sha256hex(refresh.secret), 'the refresh token is stored as its SHA-256')
  const userRec = entries.find((e) => e.key === 'users/alice')?.value as { passwordHash: string }
  t.ok(userRec.passwordHash.startsWith('scrypt$1024$8$1$'), 'the password is stored as scrypt')
})

test('auth: users, keys, sessions and revocations survive reopen', async (t) => {
  // No jwtSecret in config: the generated secret is kept in the store.
  const first = await openAuth(t)
  const alice = await first.auth.createUser({
    username: 'alice',
    password: 'alice password',
    limits: { rpm: 9 },
  })
  await first.auth.createUser({ username: 'root', password: 'root password', role: 'admin' })
  const bob = await first.auth.createUser({ username: 'bob', password: 'bob password' })
  const key = await first.auth.createKey(alice.id, { name: 'kept', models: ['m1'], limits: { rpm: 2 } })
  const dead = await first.auth.createKey(alice.id, { name: 'dead' })
  await first.auth.revokeKey(dead.id, alice.id)
  const session = await first.auth.login('alice', 'alice password', 'p')
  const loggedOut = await first.auth.login('alice', 'alice password', 'p')
  await first.auth.logout(first.auth.authenticate(loggedOut.accessToken), loggedOut.refreshToken)
  const bobKey = await first.auth.createKey(bob.id, { name: 'b' })
  await first.auth.updateUser('bob', { disabled: true })
  const users = first.auth.listUsers()
  const byId = (a: { id: string }, b: { id: string }) => (a.id < b.id ? -1 : 1)
  const keys = first.auth.listKeys().sort(byId)
  await first.close()

  const second = await openAuth(t, { dir: first.dir })
  const auth = second.auth
  t.is(auth.userCount, 3)
  t.alike(auth.listUsers(), users, 'same users')
  t.alike(auth.listKeys().sort(byId), keys, 'same keys')
  t.alike(auth.user('alice')?.limits, { rpm: 9 })
  t.is(auth.user('root')?.role, 'admin')
  t.ok((await auth.login('alice', 'alice password', 'p')).accessToken, 'the password still works')
  await rejectsWith(t, auth.login('alice', 'bob password', 'p'), 'ERR_AUTH_INVALID')
  const id = auth.authenticate(key.key)
  t.is(id.keyId, key.id, 'the key still works')
  t.alike(id.models, ['m1'])
  t.alike(auth.key(key.id)?.limits, { rpm: 2 })
  t.is(
    codeOf(() => auth.authenticate(dead.key)),
    'ERR_AUTH_INVALID',
    'the revoked key stays revoked',
  )
  t.is(auth.authenticate(session.accessToken).userId, alice.id, 'access tokens verify: same secret')
  t.is(
    codeOf(() => auth.authenticate(loggedOut.accessToken)),
    'ERR_AUTH_INVALID',
    'logout survives',
  )
  await rejectsWith(t, auth.refresh(loggedOut.refreshToken), 'ERR_AUTH_INVALID', 'revoked family survives')
  t.ok((await auth.refresh(session.refreshToken)).accessToken, 'a live refresh token rotates')
  t.is(
    codeOf(() => auth.authenticate(bobKey.key)),
    'ERR_AUTH_INVALID',
    'the disabled user stays disabled',
  )
  await rejectsWith(t, auth.login('bob', 'bob password', 'p'), 'ERR_FORBIDDEN')
  await rejectsWith(t, auth.createUser({ username: 'alice', password: 'xxxxxxxx' }), 'ERR_CONFLICT')

  // Another store has another secret: these tokens mean nothing there.
  const elsewhere = await openAuth(t)
  t.is(
    codeOf(() => elsewhere.auth.authenticate(session.accessToken)),
    'ERR_AUTH_INVALID',
  )
})

test('auth: calls after close are ERR_UNAVAILABLE', async (t) => {
  const { auth, close } = await openAuth(t)
  const alice = await auth.createUser({ username: 'alice', password: 'alice password' })
  await close()
  await rejectsWith(t, auth.createUser({ username: 'bob', password: 'bob password' }), 'ERR_UNAVAILABLE')
  await rejectsWith(t, auth.createKey(alice.id, { name: 'k' }), 'ERR_UNAVAILABLE')
})
