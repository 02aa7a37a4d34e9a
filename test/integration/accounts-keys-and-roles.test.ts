import test from 'brittle'
import { rejectsWith } from '../helpers/assert.js'
import { apiKeyFor, startClient, startGateway, testnet } from '../helpers/mesh.js'

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
