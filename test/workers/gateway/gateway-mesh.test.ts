import RPC from '@hyperswarm/rpc'
import test from 'brittle'
import { fromWireError } from '../../../facilities/net/wire-errors.js'
import { parseConfig, processorConfigSchema } from '../../../kernel/config.js'
import type { GatewayWorker } from '../../../workers/gateway/gateway.worker.js'
import type { MeshMembersReply } from '../../../workers/gateway/mesh-members.js'
import { ProcessorWorker } from '../../../workers/processor/processor.worker.js'
import { rejectsWith } from '../../helpers/assert.js'
import { apiKeyFor, startClient, startGateway, type T, TEST_LOG, testnet, until } from '../../helpers/mesh.js'

const MEMBERS = { processors: { admission: 'members' } }

/** A processor joined to a gateway with `token`, in this process. */
async function joinedProcessor(t: T, bootstrap: string[], token: string): Promise<ProcessorWorker> {
  const config = parseConfig(processorConfigSchema, {
    bootstrap,
    invite: token,
    store: await t.tmp(),
    log: TEST_LOG,
    backend: { type: 'echo' },
  })
  const p = new ProcessorWorker(config)
  t.teardown(() => p.close(), { order: 1 })
  await p.ready()
  return p
}

const routed = (gateway: GatewayWorker, key: string) => gateway.router.list().some((p) => p.publicKey === key)

/** `meshMembers` asked of `issuer` by `gateway`, over its own connection to it. */
function askMembers(gateway: GatewayWorker, issuer: GatewayWorker): Promise<MeshMembersReply> {
  return gateway.net.peer(issuer.publicKey).request<MeshMembersReply>('meshMembers', null, { timeout: 5_000 })
}

test('gateway mesh: the issuer vouches for the gateway that joined and lists its processors to it alone; revoked, both stop', {
  timeout: 60_000,
}, async (t) => {
  const { net, bootstrap } = await testnet(t)
  const a = await startGateway(t, bootstrap, MEMBERS)
  const admin = await startClient(t, bootstrap, { gateway: a.publicKeyHex }, { apiKey: await apiKeyFor(a) })
  const p = await joinedProcessor(t, bootstrap, (await admin.createInvite()).token)
  t.ok(await until(() => routed(a, p.publicKeyHex)), 'A uses its processor')
  t.alike(p.vouchedGateways, [], 'no gateway invite yet: A vouches for nobody')

  const invite = await admin.createInvite({ role: 'gateway' })
  const started = Date.now()
  const b = await startGateway(t, bootstrap, { ...MEMBERS, invite: invite.token })
  t.alike(p.vouchedGateways, [b.publicKeyHex], 'joined: A vouched for B to its processor before B started')
  t.ok(await until(() => routed(b, p.publicKeyHex), 5_000), "B uses A's processor")
  t.comment(`B used it ${Date.now() - started} ms after it started`)
  t.ok((await askMembers(b, a)).processors.includes(p.publicKeyHex), 'meshMembers lists it to B')

  // Nobody else may ask, and B may not vouch for others at the processor: trust does not chain.
  const stranger = new RPC({ dht: net.createNode() })
  t.teardown(() => stranger.destroy(), { order: 0 })
  await rejectsWith(
    t,
    stranger
      .request(a.publicKey, 'meshMembers', Buffer.from('null'), { timeout: 5_000 })
      .catch((err) => Promise.reject(fromWireError(err, 'meshMembers'))),
    'ERR_FORBIDDEN',
    'a stranger may not ask for the members',
  )
  await rejectsWith(t, askMembers(a, b), 'ERR_FORBIDDEN', 'nor may A ask B (B vouches for nobody)')
  await rejectsWith(
    t,
    b.net.peer(p.publicKey).request('trust', { gateways: [] }, { timeout: 5_000 }),
    'ERR_FORBIDDEN',
    'B may not vouch at the processor',
  )

  // A processor that joins A later hears of B when A admits it, and B admits it too.
  const p2 = await joinedProcessor(t, bootstrap, (await admin.createInvite()).token)
  t.ok(await until(() => p2.vouchedGateways.includes(b.publicKeyHex), 10_000), 'pushed at its admission')
  t.ok(await until(() => routed(b, p2.publicKeyHex), 20_000), 'and B, asking A again, uses it')

  await admin.revokeInvite(invite.id)
  t.alike(p.vouchedGateways, [], 'revoked: the processors were told before the revoke returned')
  t.alike(p2.vouchedGateways, [])
  await rejectsWith(t, askMembers(b, a), 'ERR_FORBIDDEN', 'A no longer answers B')
  t.ok(await until(() => !routed(b, p.publicKeyHex) && !routed(b, p2.publicKeyHex), 10_000), 'B lost them')
  t.ok(routed(a, p.publicKeyHex) && routed(a, p2.publicKeyHex), 'A still uses both')
})

test('gateway mesh: an expired gateway token, a processor token and another mesh are refused', async (t) => {
  const { bootstrap } = await testnet(t)
  const a = await startGateway(t, bootstrap, MEMBERS)
  const admin = await startClient(t, bootstrap, { gateway: a.publicKeyHex }, { apiKey: await apiKeyFor(a) })
  const expired = await admin.createInvite({ role: 'gateway', expiresInMs: 1 })
  await new Promise((r) => setTimeout(r, 20))
  await rejectsWith(t, startGateway(t, bootstrap, { invite: expired.token }), 'ERR_INVITE_EXPIRED')
  const forProcessor = await admin.createInvite()
  await rejectsWith(t, startGateway(t, bootstrap, { invite: forProcessor.token }), 'ERR_INVITE_INVALID')
  const live = await admin.createInvite({ role: 'gateway' })
  await rejectsWith(t, startGateway(t, bootstrap, { invite: live.token, mesh: 'other' }), 'ERR_BAD_CONFIG')
  t.alike(
    (await admin.listInvites()).map((i) => i.members.length),
    [0, 0, 0],
    'nobody joined',
  )
})
