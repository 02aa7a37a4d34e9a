import test from 'brittle'
import type { InvitesFacility } from '../../../facilities/auth/invites.js'
import { LogFacility } from '../../../facilities/log.facility.js'
import { type ConfigInput, gatewayConfigSchema, parseConfig } from '../../../kernel/config.js'
import { processorProof } from '../../../kernel/identity.js'
import { type DelegatedMembers, ProcessorAdmission } from '../../../workers/gateway/admission.js'

const logger = new LogFacility({ level: 'silent' }).logger
const SECRET = 'mesh-secret-0123456789abcdef-0123456789'
const K1 = Buffer.alloc(32, 1)
const K2 = Buffer.alloc(32, 2)
const hex = (k: Buffer) => k.toString('hex')

function admission(extra: ConfigInput, members: string[] = [], delegated: DelegatedMembers | null = null) {
  const config = parseConfig(gatewayConfigSchema, { bootstrap: ['10.0.0.1:49737'], ...extra })
  const invites = {
    isMember: (key: string) => members.includes(key),
    memberKeys: () => members,
  } as unknown as InvitesFacility
  return new ProcessorAdmission(
    config,
    () => invites,
    () => logger,
    () => delegated,
  )
}

test('admission: any on a loopback bootstrap, members otherwise, unless configured', (t) => {
  t.is(admission({ bootstrap: ['127.0.0.1:49737'] }).mode, 'any')
  t.is(admission({}).mode, 'members')
  t.is(admission({ bootstrap: 'public' }).mode, 'members')
  t.is(admission({ bootstrap: ['127.0.0.1:49737'], processors: { admission: 'members' } }).mode, 'members')
  t.is(admission({ processors: { admission: 'any' } }).mode, 'any')
  t.is(admission({ processors: { admission: 'any' } }).refusal(K1, {}), null, 'any admits a stranger')
})

test('admission: members are trusted keys, invite members, and processors proving the mesh secret', (t) => {
  const a = admission({ processors: { trusted: [hex(K1).toUpperCase()] } }, [hex(K2)])
  t.is(a.refusal(K1, {}), null, 'trusted (any case)')
  t.is(a.refusal(K2, {}), null, 'member by invite')
  t.ok(a.refusal(Buffer.alloc(32, 3), {}), 'a stranger is refused, with a reason')
  t.absent(a.admits(hex(Buffer.alloc(32, 3))))

  const s = admission({ meshSecret: SECRET })
  const proof = processorProof(SECRET, 'default', hex(K1))
  t.ok(s.refusal(K1, {}), 'no proof')
  t.ok(s.refusal(K1, { meshProof: processorProof(SECRET, 'default', hex(K2)) }), "another key's proof")
  t.ok(
    s.refusal(K1, { meshProof: processorProof('another-secret-0123456789abcdef-xyz', 'default', hex(K1)) }),
  )
  t.ok(s.refusal(K1, { meshProof: processorProof(SECRET, 'other-mesh', hex(K1)) }), "another mesh's proof")
  t.ok(s.refusal(K1, { meshProof: 'zz' }), 'garbage')
  t.is(s.refusal(K1, { meshProof: proof }), null, 'the right proof')
  t.ok(s.admits(hex(K1)), 'remembered: the proof is bound to the key')
  t.ok(admission({}).refusal(K1, { meshProof: proof }), 'a gateway without the secret ignores proofs')
})

test('admission: a joined gateway also admits what its issuers list, and asks them about a stranger', (t) => {
  const asked: string[] = []
  const listed = new Set([hex(K2)])
  const a = admission({ processors: { trusted: [hex(K1)] } }, [], {
    admits: (key) => listed.has(key),
    unknown: (key) => asked.push(key),
  })
  t.is(a.refusal(K2, {}), null, 'listed by the issuer')
  t.ok(a.admits(hex(K2)))
  t.absent(a.admitsOwn(hex(K2)), 'but not by its own rules')
  t.alike(a.memberKeys(), [hex(K1)], 'what it would list to others: its own members only')
  const K3 = Buffer.alloc(32, 3)
  t.ok(a.refusal(K3, {}), 'a stranger is refused')
  t.alike(asked, [hex(K3)], '…and the issuers are asked about it')
  listed.delete(hex(K2))
  t.ok(a.refusal(K2, {}), 'no longer listed: refused')
})
