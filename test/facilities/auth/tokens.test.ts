import test from 'brittle'
import jwt, { type Algorithm } from 'jsonwebtoken'
import { rejectsWith, thrown } from '../../helpers/assert.js'
import { b64url, claimsOf, codeOf, opaque, openAuth, SECRET } from './fixture.js'

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
