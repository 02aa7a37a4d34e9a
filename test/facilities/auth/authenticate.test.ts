import test from 'brittle'
import jwt from 'jsonwebtoken'
import type { Identity } from '../../../facilities/auth/auth.facility.js'
import { rejectsWith } from '../../helpers/assert.js'
import { codeOf, opaque, openAuth, SECRET } from './fixture.js'

test('auth: authenticate() with an access token and with an API key', async (t) => {
  const { auth } = await openAuth(t, { config: { jwtSecret: SECRET } })
  const alice = await auth.createUser({ username: 'alice', password: 'alice password' })
  const pair = await auth.login('alice', 'alice password', 'p')
  const claims = jwt.decode(pair.accessToken) as { jti: string; exp: number }
  const expected: Identity = {
    userId: alice.id,
    username: 'alice',
    role: 'user',
    keyId: null,
    models: null,
    jti: claims.jti,
    expiresAt: claims.exp * 1000,
  }
  t.alike(auth.authenticate(pair.accessToken), expected)
  t.alike(auth.authenticate(pair.accessToken), expected, 'again (cached)')

  const key = await auth.createKey(alice.id, { name: 'laptop', models: ['m1', 'm2'] })
  t.ok(/^lmk_[0-9a-f]{16}_[A-Za-z0-9_-]{32}$/.test(key.key), key.key)
  t.is(opaque(key.key).id, key.id)
  t.is(key.prefix, `lmk_${key.id}_…`)
  t.alike(auth.authenticate(key.key), {
    userId: alice.id,
    username: 'alice',
    role: 'user',
    keyId: key.id,
    models: ['m1', 'm2'],
    jti: null,
    expiresAt: null,
  })
  const plain = await auth.createKey(alice.id, { name: 'ci' })
  t.is(auth.authenticate(plain.key).models, null, 'no model list: all models')
  t.alike(
    auth.listKeys(alice.id).map((k) => k.name),
    ['laptop', 'ci'],
  )
  t.absent(
    auth.listKeys().some((k) => 'hash' in k || 'key' in k),
    'listed keys carry neither hash nor key',
  )

  // A near miss of the key is not the key.
  const last = key.key.at(-1) === 'A' ? 'B' : 'A'
  t.is(
    codeOf(() => auth.authenticate(key.key.slice(0, -1) + last)),
    'ERR_AUTH_INVALID',
    'one char off',
  )
  t.is(
    codeOf(() => auth.authenticate(`lmk_${'0'.repeat(16)}_${opaque(key.key).secret}`)),
    'ERR_AUTH_INVALID',
  )
  t.is(
    codeOf(() => auth.authenticate('lmk_nothing')),
    'ERR_AUTH_INVALID',
    'malformed key',
  )
  t.is(
    codeOf(() => auth.authenticate(pair.refreshToken)),
    'ERR_AUTH_INVALID',
    'a refresh token is not one',
  )
  t.is(
    codeOf(() => auth.authenticate('garbage')),
    'ERR_AUTH_INVALID',
  )
  t.is(
    codeOf(() => auth.authenticate(42)),
    'ERR_AUTH_INVALID',
  )
  t.is(
    codeOf(() => auth.authenticate('x'.repeat(5000))),
    'ERR_AUTH_INVALID',
  )

  await rejectsWith(t, auth.createKey(alice.id, { name: '' }), 'ERR_BAD_REQUEST', 'empty name')
  await rejectsWith(t, auth.createKey(alice.id, { name: 'k', models: [] }), 'ERR_BAD_REQUEST', 'no models')
  await rejectsWith(t, auth.createKey(alice.id, { name: 'k', expiresInDays: 0 }), 'ERR_BAD_REQUEST')
  await rejectsWith(t, auth.createKey('0000000000000000', { name: 'k' }), 'ERR_NOT_FOUND', 'no such user')
})

test('auth: missing credential is ERR_AUTH_REQUIRED', async (t) => {
  const { auth } = await openAuth(t)
  for (const token of [undefined, null, '']) {
    t.is(
      codeOf(() => auth.authenticate(token)),
      'ERR_AUTH_REQUIRED',
      JSON.stringify(token) ?? 'undefined',
    )
  }
})

test('auth: whitespace around a credential is ignored, over RPC as over HTTP', async (t) => {
  const { auth } = await openAuth(t)
  const alice = await auth.createUser({ username: 'alice', password: 'alice password' })
  const key = await auth.createKey(alice.id, { name: 'k' })
  const pair = await auth.login('alice', 'alice password', 'p')
  t.alike(auth.authenticate(`  ${key.key}\n`), auth.authenticate(key.key), 'an API key')
  t.alike(auth.authenticate(`\t${pair.accessToken} `), auth.authenticate(pair.accessToken), 'an access token')
  t.is(
    codeOf(() => auth.authenticate(' \t\n')),
    'ERR_AUTH_REQUIRED',
    'only whitespace: no credential',
  )
  t.is(
    codeOf(() => auth.authenticate(`${key.key.slice(0, 10)} ${key.key.slice(10)}`)),
    'ERR_AUTH_INVALID',
    'inside it, whitespace is wrong',
  )
})
