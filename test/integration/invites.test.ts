import test from 'brittle'
import type { MeshClient } from '../../workers/client/client.worker.js'
import type { GatewayWorker } from '../../workers/gateway/gateway.worker.js'
import { rejectsWith } from '../helpers/assert.js'
import { type Run, runFresh } from '../helpers/fresh-machine.js'
import {
  apiKeyFor,
  spawnProcessor,
  startClient,
  startGateway,
  type T,
  testnet,
  until,
} from '../helpers/mesh.js'

const MEMBERS = { processors: { admission: 'members' } }

/** `llm-mesh processor <args>` as a new machine runs it: nothing trusted but what the token says. */
const runProcessor = (t: T, args: string[]): Run => runFresh(t, ['processor', ...args])

const routed = (gateway: GatewayWorker, key: string) => gateway.router.list().some((p) => p.publicKey === key)

/** Asks `echo` until a processor answers; the key of the one that did, or null after `limitMs`. */
async function firstAnswer(client: MeshClient, limitMs: number): Promise<string | null> {
  const deadline = Date.now() + limitMs
  while (Date.now() < deadline) {
    const answer = await client
      .generate({ model: 'echo', prompt: 'ping', timeoutMs: 2_000 })
      .catch(() => null)
    if (answer?.text === 'ping') return answer.processor ?? ''
    await new Promise((r) => setTimeout(r, 25))
  }
  return null
}

test('invites: one command joins a processor, serving within 5 s under admission "members"; revoked, it is dropped and cannot come back', async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, MEMBERS)
  const admin = await startClient(t, bootstrap, {}, { apiKey: await apiKeyFor(gateway) })

  // A processor that trusts the gateway but never joined: found on the DHT, never used.
  const stranger = await spawnProcessor(t, bootstrap, ['--store', await t.tmp(), '--backend', 'echo'])
  await gateway.router.refresh()
  await new Promise((r) => setTimeout(r, 1_500))
  t.absent(routed(gateway, stranger.publicKey), 'a processor that never joined is not used')
  await rejectsWith(
    t,
    admin.generate({ model: 'echo', prompt: 'x' }),
    'ERR_MODEL_NOT_FOUND',
    'nothing serves',
  )

  const made = await admin.createInvite({ note: 'new box' })
  t.ok(made.token.startsWith('lmi1.'))
  const data = await t.tmp()
  const started = Date.now()
  const joiner = runProcessor(t, ['--join', made.token, '--data', data, '--backend', 'echo'])
  const answeredBy = await firstAnswer(admin, 5_000)
  const tookMs = Date.now() - started
  const key = await joiner.ready
  t.ok(key, `the joined processor serves (${joiner.stderr().slice(-300)})`)
  t.is(answeredBy, key, `it answered a prompt through the gateway ${tookMs} ms after the command started`)
  t.ok(tookMs < 5_000, `within 5 s (${tookMs} ms)`)
  t.absent(routed(gateway, stranger.publicKey), 'the stranger still is not')
  const listed = await admin.listInvites()
  t.alike(
    listed.find((i) => i.id === made.id)?.members.map((m) => m.key),
    [key],
    'the invite lists its member',
  )

  // Restarted with only its data folder: the same identity, used again.
  await joiner.stop()
  const again = runProcessor(t, ['--data', data])
  t.is(await again.ready, key, `same key after a restart from --data (${again.stderr().slice(-300)})`)
  t.ok(await until(() => routed(gateway, key as string)), 'used again')

  await admin.revokeInvite(made.id)
  t.absent(routed(gateway, key as string), 'revoking drops its member at once')
  await rejectsWith(
    t,
    admin.generate({ model: 'echo', prompt: 'x' }),
    'ERR_NO_PROCESSOR',
    'nothing serves any more',
  )
  await new Promise((r) => setTimeout(r, 1_500))
  t.absent(routed(gateway, key as string), 'and it is not taken back on a later lookup')
  t.ok((await admin.listInvites()).find((i) => i.id === made.id)?.revokedAt, 'listed as revoked')

  await again.stop()
  const refused = runProcessor(t, ['--data', data])
  t.is(await refused.exited, 1, 'a restart with the revoked invite fails')
  t.ok(refused.stderr().includes('llm-mesh: ERR_INVITE_REVOKED'), refused.stderr().slice(-300))
  const fresh = runProcessor(t, ['--join', made.token, '--data', await t.tmp(), '--backend', 'echo'])
  t.is(await fresh.exited, 1, 'a new machine with the revoked token is refused')
  t.ok(fresh.stderr().includes('llm-mesh: ERR_INVITE_REVOKED'), fresh.stderr().slice(-300))
})

test('invites: an expired token and a malformed one are refused with coded errors', async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, MEMBERS)
  const admin = await startClient(t, bootstrap, {}, { apiKey: await apiKeyFor(gateway) })
  const made = await admin.createInvite({ expiresInMs: 1 })
  await new Promise((r) => setTimeout(r, 20))
  const expired = runProcessor(t, ['--join', made.token, '--data', await t.tmp(), '--backend', 'echo'])
  t.is(await expired.exited, 1)
  t.ok(expired.stderr().includes('llm-mesh: ERR_INVITE_EXPIRED'), expired.stderr().slice(-300))
  t.is((await admin.listInvites())[0]?.members.length, 0, 'nobody joined')

  const cut = runProcessor(t, [
    '--join',
    made.token.slice(0, 40),
    '--data',
    await t.tmp(),
    '--backend',
    'echo',
  ])
  t.is(await cut.exited, 1)
  t.ok(cut.stderr().includes('llm-mesh: ERR_INVITE_INVALID'), cut.stderr().slice(-300))

  const user = await startClient(t, bootstrap, {}, { apiKey: await apiKeyFor(gateway, 'bob', 'user') })
  await rejectsWith(t, user.createInvite(), 'ERR_FORBIDDEN', 'only admins make invites')
  await rejectsWith(t, user.listInvites(), 'ERR_FORBIDDEN', '…list them')
  await rejectsWith(t, user.revokeInvite(made.id), 'ERR_FORBIDDEN', '…or revoke them')
  await rejectsWith(
    t,
    admin.createInvite({ role: 'client' as never }),
    'ERR_BAD_REQUEST',
    'an invite for no known role',
  )
})

test('invites: the CLI makes, lists and revokes them; the token carries the bootstrap asked for', async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, MEMBERS)
  const key = await apiKeyFor(gateway)
  const cli = async (args: string[]) => {
    const r = runFresh(t, ['invite', ...args, '--bootstrap', bootstrap.join(','), '--api-key', key])
    const code = await r.exited
    return { code, stdout: r.stdout(), stderr: r.stderr() }
  }
  const made = await cli(['--expires', '2h', '--note', 'rack 3', '--token-bootstrap', '127.0.0.2:4000'])
  t.is(made.code, 0, made.stderr)
  const token = made.stdout.trim()
  t.ok(/^lmi1\.[A-Za-z0-9_-]+$/.test(token), 'stdout holds the token alone')
  const body = JSON.parse(Buffer.from(token.slice(5), 'base64url').toString()) as Record<string, unknown>
  t.alike(body.bootstrap, ['127.0.0.2:4000'])
  t.alike(body.gateways, [gateway.publicKeyHex])
  t.is(body.mesh, 'default')

  const ls = await cli(['ls', '--json'])
  t.is(ls.code, 0, ls.stderr)
  const [listed] = JSON.parse(ls.stdout) as Array<{ id: string; note: string; expiresAt: string }>
  t.is(listed?.note, 'rack 3')
  t.ok(Math.abs(Date.parse(listed?.expiresAt ?? '') - Date.now() - 2 * 3_600_000) < 60_000, 'expires in 2 h')
  t.absent(ls.stdout.includes(body.secret as string), 'no secret in the list')

  const revoked = await cli(['revoke', listed?.id ?? ''])
  t.is(revoked.code, 0, revoked.stderr)
  t.ok(revoked.stdout.startsWith(`revoked ${listed?.id}`))
  t.ok((await cli(['ls'])).stdout.includes('revoked'))
  const bad = await cli(['--expires', 'soon'])
  t.is(bad.code, 2)
  t.ok(bad.stderr.includes('--expires'), bad.stderr)
})

test('invites: under admission "members" a processor proving the mesh secret is still used', async (t) => {
  const { bootstrap } = await testnet(t)
  const secret = 'a-mesh-secret-of-at-least-32-characters'
  const gateway = await startGateway(t, bootstrap, { ...MEMBERS, meshSecret: secret })
  const p = await spawnProcessor(t, bootstrap, [
    '--store',
    await t.tmp(),
    '--backend',
    'echo',
    '--mesh-secret',
    secret,
  ])
  t.ok(await until(() => routed(gateway, p.publicKey)), 'admitted by its proof')
  const stranger = await spawnProcessor(t, bootstrap, ['--store', await t.tmp(), '--backend', 'echo'])
  await new Promise((r) => setTimeout(r, 1_500))
  t.absent(routed(gateway, stranger.publicKey), 'one without it is not')
})
