import { createHash } from 'node:crypto'
import test, { type Test } from 'brittle'
import jwt, { type Algorithm } from 'jsonwebtoken'
import type { z } from 'zod'
import {
  AUTH_BEE,
  AuthFacility,
  type Identity,
  passwordLength,
} from '../../../facilities/auth/auth.facility.js'
import { LogFacility } from '../../../facilities/log.facility.js'
import { StoreFacility } from '../../../facilities/store.facility.js'
import { authConfigSchema } from '../../../kernel/config.js'
import { MeshError } from '../../../kernel/errors.js'
import { rejectsWith, thrown } from '../../helpers/assert.js'

const logger = new LogFacility({ level: 'silent' }).logger
const SECRET = 'test-secret-0123456789abcdef-0123456789abcdef'
const DAY_MS = 86_400_000

type AuthInput = z.input<typeof authConfigSchema>

interface Opened {
  dir: string
  store: StoreFacility
  auth: AuthFacility
  /** Closes auth, then its store. */
  close(): Promise<void>
}

async function openAuth(t: Test, opts: { dir?: string; config?: AuthInput } = {}): Promise<Opened> {
  const dir = opts.dir ?? (await t.tmp())
  const config = authConfigSchema.parse({ scrypt: { N: 1024 }, ...opts.config })
  const store = new StoreFacility({ dir })
  await store.ready()
  const auth = new AuthFacility({ store, config, logger })
  await auth.ready()
  const close = async () => {
    await auth.close()
    await store.close()
  }
  t.teardown(close)
  return { dir, store, auth, close }
}

const codeOf = (fn: () => unknown) => thrown(fn)?.code ?? null

const b64url = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url')
const sha256hex = (s: string) => createHash('sha256').update(s).digest('hex')
/** `<prefix>_<id>_<secret>` (the secret is base64url, so it may itself hold '_'). */
function opaque(token: string): { id: string; secret: string } {
  const m = /^lm[kr]_([0-9a-f]{16})_([A-Za-z0-9_-]{32})$/.exec(token)
  if (!m) throw new Error(`not an opaque token: ${token}`)
  return { id: m[1] as string, secret: m[2] as string }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** The claims of the access tokens the facility issues, for a user. */
function claimsOf(userId: string, name: string, over: Record<string, unknown> = {}): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000)
  return {
    name,
    role: 'user',
    ver: 0,
    typ: 'access',
    sub: userId,
    jti: 'feedfacefeedface',
    iss: 'llm-mesh',
    aud: 'llm-mesh',
    iat: now,
    exp: now + 600,
    ...over,
  }
}

test('auth: password hashes are scrypt$N$r$p$salt$hash, salted per hash', async (t) => {
  const { auth } = await openAuth(t)
  const h1 = await auth.hashPassword('correct horse battery')
  const h2 = await auth.hashPassword('correct horse battery')
  const shape = /^scrypt\$1024\$8\$1\$[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=$/
  t.ok(shape.test(h1), `shape: ${h1}`)
  t.ok(shape.test(h2))
  t.not(h1, h2, 'same password, different hashes')
  t.not(h1.split('$')[4], h2.split('$')[4], 'different salts')
  t.is(await auth.verifyPassword('correct horse battery', h1), true)
  t.is(await auth.verifyPassword('correct horse battery', h2), true)
  t.is(await auth.verifyPassword('correct horse batterx', h1), false)
  t.is(await auth.verifyPassword('', h1), false)
  t.is(await auth.verifyPassword('correct horse battery', 'correct horse battery'), false, 'not a hash')
  t.is(await auth.verifyPassword('x', 'bcrypt$1024$8$1$AAAA$AAAA'), false, 'another scheme')
  t.is(await auth.verifyPassword('x', 'scrypt$1024$8$1$AAAA'), false, 'too few parts')

  // Users with the same password get different hashes.
  await auth.createUser({ username: 'alice', password: 'same password' })
  await auth.createUser({ username: 'bob', password: 'same password' })
  const a = auth.user('alice')?.passwordHash as string
  const b = auth.user('bob')?.passwordHash as string
  t.ok(shape.test(a) && shape.test(b))
  t.not(a, b)
  t.is(await auth.verifyPassword('same password', a), true)
  t.is(await auth.verifyPassword('same password', b), true)

  // The cost is read from the hash: a facility with another cost still verifies old hashes.
  const other = await openAuth(t, { config: { scrypt: { N: 2048, r: 4, p: 2 } } })
  t.is(await other.auth.verifyPassword('correct horse battery', h1), true)
  const h3 = await other.auth.hashPassword('correct horse battery')
  t.ok(h3.startsWith('scrypt$2048$4$2$'), h3)
  t.is(await auth.verifyPassword('correct horse battery', h3), true)
})

test('auth: the default cost is N=32768, r=8, p=1', async (t) => {
  const config = authConfigSchema.parse({})
  t.alike(config.scrypt, { N: 32768, r: 8, p: 1 })
  // hashPassword needs no open store.
  const auth = new AuthFacility({ store: new StoreFacility({ dir: await t.tmp() }), config, logger })
  const h = await auth.hashPassword('a default-cost password')
  t.ok(/^scrypt\$32768\$8\$1\$[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=$/.test(h), h)
})

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

test('auth: login returns tokens; wrong password and unknown user are ERR_AUTH_INVALID', async (t) => {
  const { auth } = await openAuth(t, { config: { jwtSecret: SECRET } })
  const alice = await auth.createUser({ username: 'alice', password: 'alice password' })
  const pair = await auth.login('Alice', 'alice password', 'peer-1')
  t.is(pair.tokenType, 'Bearer')
  t.is(pair.expiresIn, 900)
  t.is(pair.refreshExpiresIn, 30 * 86_400)
  t.alike(pair.user, alice)
  t.ok(/^lmr_[0-9a-f]{16}_[A-Za-z0-9_-]{32}$/.test(pair.refreshToken), pair.refreshToken)
  const claims = jwt.verify(pair.accessToken, SECRET, { algorithms: ['HS256'] }) as Record<string, unknown>
  t.alike(
    { ...claims, iat: 0, exp: 0, jti: 0 },
    {
      name: 'alice',
      role: 'user',
      ver: 0,
      typ: 'access',
      sub: alice.id,
      iss: 'llm-mesh',
      aud: 'llm-mesh',
      iat: 0,
      exp: 0,
      jti: 0,
    },
  )
  t.is((claims.exp as number) - (claims.iat as number), 900)
  t.ok(/^[0-9a-f]{16}$/.test(claims.jti as string))
  t.alike(jwt.decode(pair.accessToken, { complete: true })?.header, { alg: 'HS256', typ: 'JWT' })

  const second = await auth.login('alice', 'alice password', 'peer-1')
  t.not(second.accessToken, pair.accessToken, 'a new token per login')
  t.not(second.refreshToken, pair.refreshToken)

  const wrong = await rejectsWith(t, auth.login('alice', 'alice passworD', 'peer-1'), 'ERR_AUTH_INVALID')
  await rejectsWith(t, auth.login('nobody', 'alice password', 'peer-1'), 'ERR_AUTH_INVALID', 'unknown user')
  const unknown = await rejectsWith(t, auth.login('nobody', 'whatever!', 'peer-1'), 'ERR_AUTH_INVALID')
  t.is(wrong?.reason, unknown?.reason, 'the same message: it does not tell which names exist')
  await rejectsWith(t, auth.login('alice', '', 'peer-1'), 'ERR_AUTH_INVALID', 'empty password')
  await rejectsWith(t, auth.login('alice', undefined, 'peer-1'), 'ERR_BAD_REQUEST', 'no password')
  await rejectsWith(t, auth.login(7, 'alice password', 'peer-1'), 'ERR_BAD_REQUEST', 'a number')
})

test('auth: a source is refused for an account after maxFailuresPerAccount failures on it', async (t) => {
  const { auth } = await openAuth(t, {
    config: { maxFailuresPerAccount: 3, maxFailuresPerPeer: 100, accountBackoffMs: 10 },
  })
  await auth.createUser({ username: 'alice', password: 'alice password' })
  await auth.createUser({ username: 'bob', password: 'bob password' })

  // A success from a source clears that source's count on the account.
  await rejectsWith(t, auth.login('alice', 'nope nope', 'p1'), 'ERR_AUTH_INVALID')
  await rejectsWith(t, auth.login('alice', 'nope nope', 'p1'), 'ERR_AUTH_INVALID')
  await auth.login('alice', 'alice password', 'p1')
  await rejectsWith(t, auth.login('alice', 'nope nope', 'p1'), 'ERR_AUTH_INVALID')
  await rejectsWith(t, auth.login('alice', 'nope nope', 'p1'), 'ERR_AUTH_INVALID')
  t.ok((await auth.login('alice', 'alice password', 'p1')).accessToken, 'still 2 failures: not locked')

  for (let i = 0; i < 3; i++) await rejectsWith(t, auth.login('alice', 'nope nope', 'p2'), 'ERR_AUTH_INVALID')
  const locked = await rejectsWith(
    t,
    auth.login('alice', 'alice password', 'p2'),
    'ERR_RATE_LIMITED',
    'locked for that source: refused even with the right password',
  )
  const retry = locked?.details?.retryAfterMs as number
  t.ok(retry > 14 * 60_000 && retry <= 15 * 60_000, `retryAfterMs ${retry} is about lockMs`)
  t.is(locked?.details?.limit, 'login')
  await rejectsWith(t, auth.login('ALICE', 'alice password', 'p2'), 'ERR_RATE_LIMITED', 'any case')
  t.ok((await auth.login('bob', 'bob password', 'p2')).accessToken, 'another account from it is not locked')
  t.ok(
    (await auth.login('alice', 'alice password', 'p3')).accessToken,
    'nor that account from another source',
  )
})

test('auth: a burst of guesses at once is held to the same limit as guesses one by one', async (t) => {
  const { auth } = await openAuth(t, { config: { maxFailuresPerAccount: 5, maxFailuresPerPeer: 1000 } })
  await auth.createUser({ username: 'carol', password: 'carol password' })
  const burst = await Promise.allSettled(
    Array.from({ length: 40 }, (_, i) => auth.login('carol', `guess number ${i}`, 'one-peer')),
  )
  const codes = burst.map((r) => (r.status === 'rejected' ? (r.reason as MeshError).code : 'OK'))
  const checked = codes.filter((c) => c === 'ERR_AUTH_INVALID').length
  t.ok(checked <= 5, `at most 5 guesses were checked (${checked})`)
  t.is(codes.filter((c) => c === 'ERR_RATE_LIMITED').length, 40 - checked, 'the rest refused unchecked')
  await rejectsWith(
    t,
    auth.login('carol', 'carol password', 'one-peer'),
    'ERR_RATE_LIMITED',
    'and the account is locked for that source',
  )

  // Names no account can have are refused at once and never tracked.
  await rejectsWith(t, auth.login('x'.repeat(100_000), 'whatever password', 'peer-y'), 'ERR_AUTH_INVALID')
  await rejectsWith(t, auth.login('../../etc', 'whatever password', 'peer-y'), 'ERR_AUTH_INVALID')
})

test('auth: a burst from fresh sources is spaced out per account; signed-in sources are not', async (t) => {
  const { auth } = await openAuth(t, {
    config: { maxFailuresPerAccount: 5, accountBackoffMs: 50, maxAccountBackoffMs: 400 },
  })
  await auth.createUser({ username: 'carol', password: 'carol password' })
  t.ok((await auth.login('carol', 'carol password', 'carol-laptop')).accessToken, 'carol signs in once')
  const started = Date.now()
  const burst = await Promise.allSettled(
    Array.from({ length: 40 }, (_, i) => auth.login('carol', `guess number ${i}`, `fresh-peer-${i}`)),
  )
  const codes = burst.map((r) => (r.status === 'rejected' ? (r.reason as MeshError).code : 'OK'))
  const checked = codes.filter((c) => c === 'ERR_AUTH_INVALID').length
  // 5 free, then turns 50, 100, 200 ms apart (the next would be past 400 ms away): 9.
  t.ok(checked >= 5 && checked <= 10, `5 free guesses and a few spaced ones were checked (${checked})`)
  t.is(codes.filter((c) => c === 'ERR_RATE_LIMITED').length, 40 - checked, 'the rest refused unchecked')
  t.ok(Date.now() - started >= 300, `the spaced ones waited their turn (${Date.now() - started} ms)`)

  const t0 = Date.now()
  t.ok((await auth.login('carol', 'carol password', 'carol-laptop')).accessToken, 'a signed-in source')
  t.ok(Date.now() - t0 < 300, `skips the spacing (${Date.now() - t0} ms)`)
  await sleep(450)
  t.ok(
    (await auth.login('carol', 'carol password', 'carol-phone')).accessToken,
    'a new source with the right password gets a turn (at most maxAccountBackoffMs away)',
  )
})

test('auth: a peer is refused after maxFailuresPerPeer failures across accounts', async (t) => {
  const { auth } = await openAuth(t, { config: { maxFailuresPerAccount: 100, maxFailuresPerPeer: 4 } })
  await auth.createUser({ username: 'alice', password: 'alice password' })
  await auth.createUser({ username: 'bob', password: 'bob password' })
  const names = ['bob', 'carol', 'dave', 'erin']
  for (const name of names) {
    await rejectsWith(t, auth.login(name, 'guess guess', 'attacker'), 'ERR_AUTH_INVALID', `guess ${name}`)
  }
  const refused = await rejectsWith(
    t,
    auth.login('alice', 'alice password', 'attacker'),
    'ERR_RATE_LIMITED',
    'the peer is refused, even for an account it never tried',
  )
  t.ok((refused?.details?.retryAfterMs as number) > 0)
  await rejectsWith(t, auth.login('bob', 'bob password', 'attacker'), 'ERR_RATE_LIMITED')
  t.ok((await auth.login('alice', 'alice password', 'honest')).accessToken, 'another peer logs in')
  t.ok((await auth.login('bob', 'bob password', 'honest')).accessToken, 'bob is not locked (1 failure)')
})

test('auth: a lock ends after lockMs', async (t) => {
  const { auth } = await openAuth(t, { config: { maxFailuresPerAccount: 2, lockMs: 1500 } })
  await auth.createUser({ username: 'alice', password: 'alice password' })
  await rejectsWith(t, auth.login('alice', 'nope nope', 'p1'), 'ERR_AUTH_INVALID')
  await rejectsWith(t, auth.login('alice', 'nope nope', 'p1'), 'ERR_AUTH_INVALID')
  const locked = await rejectsWith(t, auth.login('alice', 'alice password', 'p1'), 'ERR_RATE_LIMITED')
  t.ok((locked?.details?.retryAfterMs as number) <= 1500)
  await sleep(1600)
  t.ok((await auth.login('alice', 'alice password', 'p1')).accessToken, 'unlocked after lockMs')
})

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

test('auth: forged, expired and tampered JWTs are ERR_AUTH_INVALID', async (t) => {
  const { auth } = await openAuth(t, { config: { jwtSecret: SECRET } })
  const alice = await auth.createUser({ username: 'alice', password: 'alice password' })
  const sign = (claims: Record<string, unknown>, secret = SECRET, algorithm: Algorithm = 'HS256') =>
    jwt.sign(claims, secret, { algorithm })

  // Control: a token made here with the right secret and claims is accepted, so the refusals below
  // are about what each one changes.
  const good = sign(claimsOf(alice.id, 'alice', { jti: 'aaaaaaaaaaaaaaaa' }))
  t.is(auth.authenticate(good).userId, alice.id, 'control token accepted')

  const otherSecret = sign(claimsOf(alice.id, 'alice'), 'another-secret-0123456789abcdef-0123456789')
  t.is(
    codeOf(() => auth.authenticate(otherSecret)),
    'ERR_AUTH_INVALID',
    'signed with another secret',
  )

  const none = `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url(claimsOf(alice.id, 'alice'))}.`
  t.is(
    codeOf(() => auth.authenticate(none)),
    'ERR_AUTH_INVALID',
    'alg none, empty signature',
  )
  const noneSigned = `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url(claimsOf(alice.id, 'alice'))}.${good.split('.')[2]}`
  t.is(
    codeOf(() => auth.authenticate(noneSigned)),
    'ERR_AUTH_INVALID',
    'alg none with a signature',
  )

  const past = Math.floor(Date.now() / 1000)
  const expired = sign(claimsOf(alice.id, 'alice', { iat: past - 1000, exp: past - 10 }))
  const e = thrown(() => auth.authenticate(expired))
  t.is(e?.code, 'ERR_AUTH_INVALID', 'expired')
  t.is(e?.details?.reason, 'expired')
  const expiredByLib = jwt.sign({ name: 'alice', role: 'user', ver: 0, typ: 'access' }, SECRET, {
    algorithm: 'HS256',
    subject: alice.id,
    issuer: 'llm-mesh',
    audience: 'llm-mesh',
    expiresIn: -10,
    jwtid: 'bbbbbbbbbbbbbbbb',
  })
  t.is(
    codeOf(() => auth.authenticate(expiredByLib)),
    'ERR_AUTH_INVALID',
    'expiresIn -10',
  )

  const pair = await auth.login('alice', 'alice password', 'p')
  const [h, p, s] = pair.accessToken.split('.') as [string, string, string]
  const payload = JSON.parse(Buffer.from(p, 'base64url').toString())
  t.is(payload.role, 'user')
  const tampered = `${h}.${b64url({ ...payload, role: 'admin' })}.${s}`
  const te = thrown(() => auth.authenticate(tampered))
  t.is(te?.code, 'ERR_AUTH_INVALID', 'role changed to admin in the payload')
  t.is(te?.details?.reason, 'invalid')
  t.is(
    codeOf(() => auth.authenticate(`${h}.${b64url({ ...payload, sub: '0'.repeat(16) })}.${s}`)),
    'ERR_AUTH_INVALID',
    'subject changed',
  )
  t.is(auth.authenticate(pair.accessToken).role, 'user', 'the untouched token still works')

  const bad: Array<[string, string]> = [
    [sign(claimsOf(alice.id, 'alice', { iss: 'someone-else' })), 'wrong issuer'],
    [sign(claimsOf(alice.id, 'alice', { aud: 'someone-else' })), 'wrong audience'],
    [sign(claimsOf(alice.id, 'alice', { typ: 'refresh' })), 'not an access token'],
    [sign(claimsOf(alice.id, 'alice', { jti: undefined })), 'no jti'],
    [sign(claimsOf('0123456789abcdef', 'ghost')), 'unknown subject'],
    [sign(claimsOf(alice.id, 'alice'), SECRET, 'HS512'), 'right secret, HS512 (algorithm pinned)'],
    [`${h}.${p}.`, 'signature stripped'],
    [`${h}.${p}`, 'two segments'],
  ]
  for (const [token, what] of bad)
    t.is(
      codeOf(() => auth.authenticate(token)),
      'ERR_AUTH_INVALID',
      what,
    )

  // Correctly signed but claiming admin for a user who is not: the role comes from the user.
  const claimsAdmin = sign(claimsOf(alice.id, 'alice', { role: 'admin', jti: 'cccccccccccccccc' }))
  t.is(auth.authenticate(claimsAdmin).role, 'user', 'a signed admin claim does not make a user admin')
})

test('auth: refresh rotates; reuse of a rotated token revokes its family', async (t) => {
  const { auth } = await openAuth(t)
  await auth.createUser({ username: 'alice', password: 'alice password' })
  const first = await auth.login('alice', 'alice password', 'p')
  const other = await auth.login('alice', 'alice password', 'p')
  const second = await auth.refresh(first.refreshToken)
  t.not(second.refreshToken, first.refreshToken)
  t.not(second.accessToken, first.accessToken)
  t.is(auth.authenticate(second.accessToken).username, 'alice', 'the new access token works')
  await rejectsWith(
    t,
    auth.refresh(first.refreshToken),
    'ERR_AUTH_INVALID',
    'the old refresh token is used up',
  )
  await rejectsWith(
    t,
    auth.refresh(second.refreshToken),
    'ERR_AUTH_INVALID',
    'reuse revoked the family: the newer token fails too',
  )
  const third = await auth.refresh(other.refreshToken)
  t.ok(third.accessToken, 'another session (family) is unaffected')
  const fourth = await auth.refresh(third.refreshToken)
  t.ok(fourth.accessToken, 'and keeps rotating')

  await rejectsWith(t, auth.refresh('lmr_nope'), 'ERR_AUTH_INVALID', 'malformed')
  await rejectsWith(t, auth.refresh(undefined), 'ERR_AUTH_INVALID', 'missing')
  const { id } = opaque(fourth.refreshToken)
  await rejectsWith(
    t,
    auth.refresh(`lmr_${id}_${'A'.repeat(32)}`),
    'ERR_AUTH_INVALID',
    'right id, wrong secret',
  )
  t.ok((await auth.refresh(fourth.refreshToken)).accessToken, 'a wrong-secret try does not burn the token')
})

test('auth: logout revokes the access token and the refresh family', async (t) => {
  const { auth } = await openAuth(t)
  await auth.createUser({ username: 'alice', password: 'alice password' })
  const session = await auth.login('alice', 'alice password', 'p')
  const other = await auth.login('alice', 'alice password', 'p')
  const identity = auth.authenticate(session.accessToken)
  await auth.logout(identity, session.refreshToken)
  const e = thrown(() => auth.authenticate(session.accessToken))
  t.is(e?.code, 'ERR_AUTH_INVALID', 'the access token is revoked at once (even though cached)')
  await rejectsWith(t, auth.refresh(session.refreshToken), 'ERR_AUTH_INVALID', 'the refresh token too')
  t.is(auth.authenticate(other.accessToken).username, 'alice', 'another session is unaffected')
  t.ok((await auth.refresh(other.refreshToken)).accessToken)

  // Someone else's refresh token is not revoked by my logout.
  const bob = await auth.createUser({ username: 'bob', password: 'bob password' })
  const bobSession = await auth.login('bob', 'bob password', 'p')
  const aliceSession = await auth.login('alice', 'alice password', 'p')
  await auth.logout(auth.authenticate(bobSession.accessToken), aliceSession.refreshToken)
  t.is(auth.authenticate(aliceSession.accessToken).username, 'alice')
  t.ok((await auth.refresh(aliceSession.refreshToken)).accessToken, "alice's family lives on")
  t.is(
    codeOf(() => auth.authenticate(bobSession.accessToken)),
    'ERR_AUTH_INVALID',
  )
  t.is(bob.username, 'bob')

  // Logout with an access token only: the refresh family lives on.
  const third = await auth.login('alice', 'alice password', 'p')
  await auth.logout(auth.authenticate(third.accessToken))
  t.is(
    codeOf(() => auth.authenticate(third.accessToken)),
    'ERR_AUTH_INVALID',
  )
  t.ok((await auth.refresh(third.refreshToken)).accessToken)
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

test('auth: a flood of logins for unknown names hashes nothing: a real login meanwhile takes under 1 s', async (t) => {
  // A cost where each hash is tens of ms: 1,000 of them, two at a time, would hold a real login for many seconds.
  const { auth } = await openAuth(t, { config: { scrypt: { N: 16384 } } })
  await auth.createUser({ username: 'admin', password: 'the admin password' })
  const started = Date.now()
  // 50 peers × 20 made-up names each, all in flight at once.
  const flood = Array.from({ length: 1000 }, (_, i) =>
    auth.login(`ghost-${i % 50}-${Math.floor(i / 50)}`, 'some guess!', `peer-${i % 50}`),
  )
  await sleep(20)
  const t0 = Date.now()
  const pair = await auth.login('admin', 'the admin password', 'owner-peer')
  const took = Date.now() - t0
  t.ok(pair.accessToken, 'the real login succeeds')
  t.ok(took < 1000, `the real login took ${took} ms with 1,000 unknown-name logins in flight`)
  const results = await Promise.allSettled(flood)
  t.ok(
    results.every((r) => r.status === 'rejected' && MeshError.from(r.reason).code === 'ERR_AUTH_INVALID'),
    'every unknown-name login fails as a wrong password does',
  )
  t.ok(Date.now() - started < 10_000, `the flood itself is answered on timers (${Date.now() - started} ms)`)
})

test('auth: an unknown name answers in about the time a real check takes', async (t) => {
  const { auth } = await openAuth(t, { config: { scrypt: { N: 16384 }, maxFailuresPerAccount: 100 } })
  await auth.createUser({ username: 'alice', password: 'alice password' })
  const timed = async (name: string, i: number) => {
    const t0 = performance.now()
    await rejectsWith(t, auth.login(name, 'wrong password', `peer-${i}`), 'ERR_AUTH_INVALID')
    return performance.now() - t0
  }
  const real: number[] = []
  for (let i = 0; i < 6; i++) real.push(await timed('alice', i))
  const unknown: number[] = []
  for (let i = 0; i < 6; i++) unknown.push(await timed(`nobody${i}`, i))
  const low = Math.min(...real) / 2
  const high = Math.max(...real) * 2 + 100
  t.ok(
    unknown.every((ms) => ms >= low && ms <= high),
    `unknown ${unknown.map(Math.round)} ms within [${Math.round(low)}, ${Math.round(high)}] (real ${real.map(Math.round)} ms)`,
  )
})

test('auth: hashes waiting for a slot are bounded: past it ERR_BUSY, for unknown names alike', async (t) => {
  // One failure locks a source out of an account: a busy refusal counted as one would show.
  const { auth } = await openAuth(t, { config: { maxFailuresPerAccount: 1 } })
  const users = 80
  for (let i = 0; i < users; i++) await auth.createUser({ username: `user${i}`, password: `password ${i}` })
  const logins = Array.from({ length: users }, (_, i) => auth.login(`user${i}`, 'a wrong one', `peer-${i}`))
  const unknown = rejectsWith(
    t,
    auth.login('nobody', 'a wrong one', 'peer-x'),
    'ERR_BUSY',
    'an unknown name is refused the same while the queue is full',
  )
  const codes = (await Promise.allSettled(logins)).map((r) =>
    r.status === 'rejected' ? MeshError.from(r.reason).code : 'OK',
  )
  const busy = codes.filter((c) => c === 'ERR_BUSY').length
  t.ok(busy > 0 && busy <= users - 64, `some refused as busy (${busy})`)
  t.is(codes.filter((c) => c === 'ERR_AUTH_INVALID').length, users - busy, 'the rest were checked')
  const e = await unknown
  t.ok((e?.details?.retryAfterMs as number) > 0)
  t.is(codes[79], 'ERR_BUSY')
  t.ok((await auth.login('user79', 'password 79', 'peer-79')).accessToken, 'a busy refusal is no failure')
  await rejectsWith(t, auth.login('user0', 'password 0', 'peer-0'), 'ERR_RATE_LIMITED', 'a checked one is')
})

test('auth: five wrong guesses from a stranger do not lock the owner out', async (t) => {
  const { auth } = await openAuth(t)
  const admin = await auth.createUser({ username: 'admin', password: 'the admin password', role: 'admin' })
  const key = await auth.createKey(admin.id, { name: 'ops' })
  const session = await auth.login('admin', 'the admin password', 'owner-laptop')
  for (let i = 0; i < 5; i++) {
    await rejectsWith(
      t,
      auth.login('admin', `guess ${i} guess`, 'stranger'),
      'ERR_AUTH_INVALID',
      `guess ${i}`,
    )
  }
  await rejectsWith(
    t,
    auth.login('admin', 'the admin password', 'stranger'),
    'ERR_RATE_LIMITED',
    'the stranger is locked out of the account',
  )
  const t0 = Date.now()
  t.ok(
    (await auth.login('admin', 'the admin password', 'owner-phone')).accessToken,
    'the owner, from a new source',
  )
  t.ok(Date.now() - t0 < 1500, `waited at most one short turn (${Date.now() - t0} ms)`)
  t.ok((await auth.login('admin', 'the admin password', 'owner-laptop')).accessToken, 'and from a known one')
  t.is(auth.authenticate(key.key).userId, admin.id, 'API keys are unaffected')
  t.ok((await auth.refresh(session.refreshToken)).accessToken, 'sessions refresh')

  // Fresh strangers guessing on: their guesses are spaced, the owner's right password still gets a turn.
  const { auth: other } = await openAuth(t, { config: { accountBackoffMs: 50, maxAccountBackoffMs: 1000 } })
  await other.createUser({ username: 'admin', password: 'the admin password', role: 'admin' })
  for (let i = 0; i < 10; i++) {
    await rejectsWith(t, other.login('admin', `guess ${i} guess`, `stranger-${i % 2}`), 'ERR_AUTH_INVALID')
  }
  t.ok((await other.login('admin', 'the admin password', 'owner')).accessToken, 'after 10 failures too')
})

test('auth: changePassword counts failures like login, is refused while locked, and not from a restricted key', async (t) => {
  const { auth } = await openAuth(t, {
    config: { maxFailuresPerAccount: 3, accountBackoffMs: 10, maxAccountBackoffMs: 200 },
  })
  const alice = await auth.createUser({ username: 'alice', password: 'alice password' })
  const modelKey = auth.authenticate((await auth.createKey(alice.id, { name: 'm', models: ['m1'] })).key)
  const limitKey = auth.authenticate((await auth.createKey(alice.id, { name: 'l', limits: { rpm: 5 } })).key)
  const plainKey = auth.authenticate((await auth.createKey(alice.id, { name: 'plain' })).key)
  for (const [id, what] of [
    [modelKey, 'a key with a model list'],
    [limitKey, 'a key with limits of its own'],
  ] as const) {
    await rejectsWith(
      t,
      auth.changePassword(id, 'alice password', 'taken over', 'p'),
      'ERR_FORBIDDEN',
      `${what}, even with the right password`,
    )
  }

  const session = await auth.login('alice', 'alice password', 'p')
  const token = auth.authenticate(session.accessToken)
  for (let i = 0; i < 3; i++) {
    await rejectsWith(
      t,
      auth.changePassword(plainKey, `guess ${i} guess`, 'new password', 'thief'),
      'ERR_AUTH_INVALID',
    )
  }
  await rejectsWith(
    t,
    auth.changePassword(plainKey, 'alice password', 'new password', 'thief'),
    'ERR_RATE_LIMITED',
    'locked for that source, right password or not',
  )
  await rejectsWith(
    t,
    auth.changePassword(plainKey, 'alice password', 'new password', 'another-peer'),
    'ERR_RATE_LIMITED',
    'and for that credential from any source',
  )
  await rejectsWith(
    t,
    auth.login('alice', 'alice password', 'thief'),
    'ERR_RATE_LIMITED',
    'its failures count for login too',
  )

  // Locked by failed logins: changePassword from that source is refused as well.
  for (let i = 0; i < 3; i++) await rejectsWith(t, auth.login('alice', 'nope nope', 'p3'), 'ERR_AUTH_INVALID')
  await rejectsWith(
    t,
    auth.changePassword(token, 'alice password', 'new password', 'p3'),
    'ERR_RATE_LIMITED',
    'refused while the source is locked',
  )

  // A burst with one credential is held to the limit.
  const burst = await Promise.allSettled(
    Array.from({ length: 20 }, (_, i) =>
      auth.changePassword(token, `burst ${i} guess`, 'new password', `b-${i}`),
    ),
  )
  const checked = burst.filter(
    (r) => r.status === 'rejected' && MeshError.from(r.reason).code === 'ERR_AUTH_INVALID',
  ).length
  t.ok(checked <= 3, `at most 3 guesses with one token were checked (${checked})`)

  const fresh = auth.authenticate((await auth.login('alice', 'alice password', 'p')).accessToken)
  await auth.changePassword(fresh, 'alice password', 'new password', 'p')
  t.ok((await auth.login('alice', 'new password', 'p')).accessToken, 'the owner still changes it')
})

test('auth: password length is counted in code points on every path', async (t) => {
  const { auth } = await openAuth(t)
  t.is(passwordLength('😀'.repeat(600)), 600, '600 emoji are 600 characters')
  t.is(passwordLength('x'.repeat(5000)), 1025, 'anything past 1024 counts as 1025')
  const e600 = '😀'.repeat(600)
  const alice = await auth.createUser({ username: 'alice', password: e600 })
  const pair = await auth.login('alice', e600, 'p')
  t.ok(pair.accessToken, 'a password accepted at creation is accepted at login')
  const e1024 = '🙂'.repeat(1024)
  await auth.changePassword(auth.authenticate(pair.accessToken), e600, e1024, 'p')
  t.ok((await auth.login('alice', e1024, 'p')).accessToken, '1024 emoji: changed and logged in with')
  const e1025 = '🙂'.repeat(1025)
  await rejectsWith(t, auth.login('alice', e1025, 'p'), 'ERR_BAD_REQUEST', 'login: 1025 emoji')
  await rejectsWith(t, auth.setPassword('alice', e1025), 'ERR_BAD_REQUEST', 'reset: 1025 emoji')
  await rejectsWith(t, auth.createUser({ username: 'bob', password: e1025 }), 'ERR_BAD_REQUEST', 'create')
  await rejectsWith(
    t,
    auth.createUser({ username: 'bob', password: '😀'.repeat(7) }),
    'ERR_BAD_REQUEST',
    '7 emoji',
  )
  await auth.setPassword('alice', '😀'.repeat(8))
  t.ok((await auth.login('alice', '😀'.repeat(8), 'p')).user.id === alice.id, '8 emoji are enough')
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

test('auth: a signed access token without exp is refused', async (t) => {
  const { auth } = await openAuth(t, { config: { jwtSecret: SECRET } })
  const alice = await auth.createUser({ username: 'alice', password: 'alice password' })
  const claims = claimsOf(alice.id, 'alice')
  t.is(auth.authenticate(jwt.sign(claims, SECRET, { algorithm: 'HS256' })).userId, alice.id, 'control')
  delete claims.exp
  const e = thrown(() => auth.authenticate(jwt.sign({ ...claims, jti: 'dddddddddddddddd' }, SECRET)))
  t.is(e?.code, 'ERR_AUTH_INVALID', 'no exp: it would be good forever')
  t.is(e?.details?.reason, 'invalid')
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
