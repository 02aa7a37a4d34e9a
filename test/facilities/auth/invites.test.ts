import test from 'brittle'
import { InvitesFacility } from '../../../facilities/auth/invites.js'
import { StoreFacility } from '../../../facilities/store.facility.js'
import { rejectsWith } from '../../helpers/assert.js'
import { logger, sha256hex, sleep } from './fixture.js'

const P1 = '11'.repeat(32)
const P2 = '22'.repeat(32)

async function openInvites(t: { tmp(): Promise<string>; teardown(fn: () => unknown): void }, dir?: string) {
  const where = dir ?? (await t.tmp())
  const store = new StoreFacility({ dir: where })
  await store.ready()
  const invites = new InvitesFacility({ store, logger })
  await invites.ready()
  let closed = false
  const close = async () => {
    if (closed) return
    closed = true
    await invites.close()
    await store.close()
  }
  t.teardown(close)
  return { dir: where, invites, close }
}

test('invites: made, listed without the secret, redeemed by a member, kept across restarts', async (t) => {
  const { dir, invites, close } = await openInvites(t)
  const { invite, secret } = await invites.create({ note: 'rack 2' }, 'root')
  t.is(invite.role, 'processor', 'processor by default')
  t.is(invite.createdBy, 'root')
  t.ok(
    invite.expiresAt && Date.parse(invite.expiresAt) > Date.now() + 23 * 3_600_000,
    'expires in 24h by default',
  )
  t.ok(/^[A-Za-z0-9_-]{32}$/.test(secret))
  const listed = JSON.stringify(invites.list())
  t.absent(listed.includes(secret), 'the list never shows the secret')
  t.absent(listed.includes(sha256hex(secret)), '…nor its hash')

  t.absent(invites.isMember(P1))
  const joined = await invites.redeem({ id: invite.id, secret, role: 'processor' }, P1)
  t.alike(
    joined.members.map((m) => m.key),
    [P1],
  )
  t.ok(invites.isMember(P1, 'processor'))
  t.absent(invites.isMember(P1, 'gateway'), 'a member for its role only')
  await invites.redeem({ id: invite.id, secret }, P1)
  t.is(invites.list()[0]?.members.length, 1, 'joining again changes nothing')

  await close()
  const again = await openInvites(t, dir)
  t.ok(again.invites.isMember(P1), 'members survive a restart')
  t.is(again.invites.list()[0]?.note, 'rack 2')
})

test('invites: wrong secret, unknown id or role is ERR_INVITE_INVALID; bad input ERR_BAD_REQUEST', async (t) => {
  const { invites } = await openInvites(t)
  const { invite, secret } = await invites.create({}, 'root')
  await rejectsWith(
    t,
    invites.redeem({ id: invite.id, secret: `${secret.slice(0, -1)}x` }, P1),
    'ERR_INVITE_INVALID',
  )
  await rejectsWith(
    t,
    invites.redeem({ id: '0123456789abcdef', secret }, P1),
    'ERR_INVITE_INVALID',
    'unknown id',
  )
  await rejectsWith(t, invites.redeem({}, P1), 'ERR_INVITE_INVALID', 'nothing')
  await rejectsWith(
    t,
    invites.redeem({ id: invite.id, secret, role: 'gateway' }, P1),
    'ERR_INVITE_INVALID',
    'role',
  )
  t.absent(invites.isMember(P1))
  for (const bad of [
    { role: 'admin' },
    { expiresInMs: 0 },
    { expiresInMs: 1.5 },
    { expiresInMs: '1h' },
    { note: 7 },
  ])
    await rejectsWith(t, invites.create(bad, 'root'), 'ERR_BAD_REQUEST', JSON.stringify(bad))
  t.is((await invites.create({ expiresInMs: null }, 'root')).invite.expiresAt, null, 'null: never expires')
})

test('invites: an expired invite admits nobody new, but a member may join again', async (t) => {
  const { invites } = await openInvites(t)
  const { invite, secret } = await invites.create({ expiresInMs: 100 }, 'root')
  await invites.redeem({ id: invite.id, secret }, P1)
  await sleep(150)
  await rejectsWith(t, invites.redeem({ id: invite.id, secret }, P2), 'ERR_INVITE_EXPIRED')
  t.absent(invites.isMember(P2))
  await invites.redeem({ id: invite.id, secret }, P1)
  t.ok(invites.isMember(P1), 'already a member: still one')
})

test('invites: revoking refuses the token and ends its members, not those of another invite', async (t) => {
  const { dir, invites, close } = await openInvites(t)
  const a = await invites.create({}, 'root')
  const b = await invites.create({}, 'root')
  await invites.redeem({ id: a.invite.id, secret: a.secret }, P1)
  await invites.redeem({ id: a.invite.id, secret: a.secret }, P2)
  await invites.redeem({ id: b.invite.id, secret: b.secret }, P2)
  const { invite, removed } = await invites.revoke(a.invite.id)
  t.ok(invite.revokedAt)
  t.alike(removed, [P1], 'P2 is still a member by the other invite')
  t.absent(invites.isMember(P1))
  t.ok(invites.isMember(P2))
  await rejectsWith(
    t,
    invites.redeem({ id: a.invite.id, secret: a.secret }, P1),
    'ERR_INVITE_REVOKED',
    'a member',
  )
  await rejectsWith(t, invites.redeem({ id: a.invite.id, secret: a.secret }, P2), 'ERR_INVITE_REVOKED', 'new')
  t.alike((await invites.revoke(a.invite.id)).removed, [], 'revoking twice changes nothing')
  await rejectsWith(t, invites.revoke('0123456789abcdef'), 'ERR_NOT_FOUND')
  await close()
  const again = await openInvites(t, dir)
  t.absent(again.invites.isMember(P1), 'revocation survives a restart')
  t.alike(again.invites.memberKeys(), [P2])
})

test('invites: failed joins are bounded per peer and per invite (the secret cannot be guessed)', async (t) => {
  const { invites } = await openInvites(t)
  const { invite, secret } = await invites.create({}, 'root')
  for (let i = 0; i < 20; i++)
    await rejectsWith(
      t,
      invites.redeem({ id: invite.id, secret: `guess-number-${i}-xxxxxxxxxx` }, P1),
      'ERR_INVITE_INVALID',
    )
  const e = await rejectsWith(
    t,
    invites.redeem({ id: invite.id, secret }, P1),
    'ERR_RATE_LIMITED',
    'even the right one',
  )
  t.ok(Number(e?.details?.retryAfterMs) > 0)
  await rejectsWith(
    t,
    invites.redeem({ id: invite.id, secret }, P2),
    'ERR_RATE_LIMITED',
    'the invite itself is held',
  )
  t.absent(invites.isMember(P1))
  t.absent(invites.isMember(P2))
})

test('invites: others failing on an invite do not lock its members out; members are records of their own', async (t) => {
  const { dir, invites, close } = await openInvites(t)
  const { invite, secret } = await invites.create({}, 'root')
  await invites.redeem({ id: invite.id, secret }, P1)
  // Someone who saw the id (logs, join.json) fails from many keys until the invite is held.
  for (let i = 0; i < 20; i++)
    await rejectsWith(
      t,
      invites.redeem({ id: invite.id, secret: `guess-number-${i}-xxxxxxxxxx` }, `${i}`.padStart(64, 'f')),
      'ERR_INVITE_INVALID',
    )
  await rejectsWith(t, invites.redeem({ id: invite.id, secret }, P2), 'ERR_RATE_LIMITED', 'a newcomer waits')
  t.is((await invites.redeem({ id: invite.id, secret }, P1)).id, invite.id, 'a member gets back in')
  await close()
  const again = await openInvites(t, dir)
  t.alike(again.invites.memberKeys(), [P1], 'members come back from their own records')
  t.is(again.invites.list()[0]?.members.length, 1)
})

test('invites: a gateway invite makes gateway members, apart from processor ones; everMade remembers revoked ones', async (t) => {
  const { dir, invites, close } = await openInvites(t)
  t.absent(invites.everMade('gateway'), 'no gateway invite yet')
  const g = await invites.create({ role: 'gateway' }, 'root')
  t.is(g.invite.role, 'gateway')
  t.ok(invites.everMade('gateway'))
  await rejectsWith(
    t,
    invites.redeem({ id: g.invite.id, secret: g.secret, role: 'processor' }, P1),
    'ERR_INVITE_INVALID',
    'not for a processor',
  )
  await invites.redeem({ id: g.invite.id, secret: g.secret, role: 'gateway' }, P1)
  t.ok(invites.isMember(P1, 'gateway'))
  t.absent(invites.isMember(P1, 'processor'), 'a gateway member is no processor member')
  t.alike(invites.memberKeys('gateway'), [P1])
  t.alike(invites.memberKeys('processor'), [])
  t.alike((await invites.revoke(g.invite.id)).removed, [P1])
  t.alike(invites.memberKeys('gateway'), [])
  await close()
  const again = await openInvites(t, dir)
  t.ok(again.invites.everMade('gateway'), 'a revoked gateway invite still counts: its empty set is pushed')
})
