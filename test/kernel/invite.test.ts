import test from 'brittle'
import { decodeInvite, encodeInvite, INVITE_PREFIX, type Invite } from '../../kernel/invite.js'
import { thrown } from '../helpers/assert.js'

const INVITE: Invite = {
  v: 1,
  mesh: 'lab',
  bootstrap: ['127.0.0.1:49737', 'node.example:49738'],
  gateways: ['ab'.repeat(32)],
  role: 'processor',
  id: '0123456789abcdef',
  secret: 'c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0',
}

const b64 = (o: unknown) => INVITE_PREFIX + Buffer.from(JSON.stringify(o)).toString('base64url')
const codeOf = (fn: () => unknown) => thrown(fn)?.code ?? null

test('invite token: round trip, and whitespace around it is ignored', (t) => {
  const token = encodeInvite(INVITE)
  t.ok(token.startsWith('lmi1.'))
  t.ok(/^lmi1\.[A-Za-z0-9_-]+$/.test(token), 'one word: safe to paste in a shell')
  t.alike(decodeInvite(token), INVITE)
  t.alike(decodeInvite(`  ${token}\n`), INVITE)
  t.alike(decodeInvite(encodeInvite({ ...INVITE, bootstrap: 'public' })).bootstrap, 'public')
})

test('invite token: anything else is ERR_INVITE_INVALID, saying what is wrong', (t) => {
  const bad: Array<[unknown, string]> = [
    [undefined, 'not a string'],
    [42, 'a number'],
    ['', 'empty'],
    ['lmk_0123456789abcdef_secret', 'an API key'],
    ['lmi1.', 'no body'],
    ['lmi1.!!!', 'not base64url'],
    [`lmi1.${Buffer.from('{"v":1,').toString('base64url')}`, 'cut short'],
    [encodeInvite(INVITE).slice(0, 60), 'truncated'],
    [b64({ ...INVITE, v: 2 }), 'another version'],
    [b64({ ...INVITE, role: 'admin' }), 'unknown role'],
    [b64({ ...INVITE, gateways: [] }), 'no gateway'],
    [b64({ ...INVITE, gateways: ['xyz'] }), 'a bad key'],
    [b64({ ...INVITE, bootstrap: [] }), 'no bootstrap'],
    [b64({ ...INVITE, bootstrap: ['nohostport'] }), 'a bad bootstrap node'],
    [b64({ ...INVITE, secret: 'short' }), 'a short secret'],
    [b64({ ...INVITE, extra: true }), 'an unknown field'],
    [`lmi1.${'A'.repeat(9_000)}`, 'too long'],
  ]
  for (const [token, what] of bad)
    t.is(
      codeOf(() => decodeInvite(token)),
      'ERR_INVITE_INVALID',
      what,
    )
  const e = thrown(() => decodeInvite(b64({ ...INVITE, gateways: ['xyz'] })))
  t.ok(e?.message.includes('gateways.0'), `names the field: ${e?.message}`)
})
