import test from 'brittle'
import { AuthFacility, passwordLength } from '../../../facilities/auth/auth.facility.js'
import { StoreFacility } from '../../../facilities/store.facility.js'
import { authConfigSchema } from '../../../kernel/config.js'
import { MeshError } from '../../../kernel/errors.js'
import { rejectsWith } from '../../helpers/assert.js'
import { logger, openAuth, sleep } from './fixture.js'

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
