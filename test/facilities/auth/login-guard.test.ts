import test from 'brittle'
import jwt from 'jsonwebtoken'
import { MeshError } from '../../../kernel/errors.js'
import { rejectsWith } from '../../helpers/assert.js'
import { openAuth, SECRET, sleep } from './fixture.js'

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
