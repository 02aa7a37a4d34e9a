import test from 'brittle'
import type { MeshClient } from '../../workers/client/client.worker.js'
import type { GatewayWorker } from '../../workers/gateway/gateway.worker.js'
import { type Run, runFresh } from '../helpers/fresh-machine.js'
import { apiKeyFor, startClient, startGateway, type T, testnet, until } from '../helpers/mesh.js'

const MEMBERS = { processors: { admission: 'members' } }
const PASSWORD = 'password-of-the-joined-gateway-admin'

/** `llm-mesh <args>` as a new machine runs it (its admin's password for a gateway's first start). */
const run = (t: T, args: string[]): Run => runFresh(t, args, { LLM_MESH_ADMIN_PASSWORD: PASSWORD })

/** `llm-mesh invite <args>` against gateway A, as its admin; stdout is the token. */
async function cliInvite(t: T, bootstrap: string[], key: string, args: string[]): Promise<string> {
  const r = run(t, ['invite', ...args, '--bootstrap', bootstrap.join(','), '--api-key', key])
  const code = await r.exited
  if (code !== 0) throw new Error(`invite exited with ${code}: ${r.stderr()}`)
  return r.stdout().trim()
}

const routed = (gateway: GatewayWorker, key: string) => gateway.router.list().some((p) => p.publicKey === key)

/** Asks `echo` once; the key of the processor that answered, or null on any failure. */
async function answer(client: MeshClient, timeoutMs = 2_000): Promise<string | null> {
  const a = await client.generate({ model: 'echo', prompt: 'ping', timeoutMs }).catch(() => null)
  return a?.text === 'ping' ? (a.processor ?? '') : null
}

/** Asks until a processor answers; its key, or null after `limitMs`. */
async function firstAnswer(client: MeshClient, limitMs: number): Promise<string | null> {
  const deadline = Date.now() + limitMs
  while (Date.now() < deadline) {
    const by = await answer(client)
    if (by !== null) return by
    await new Promise((r) => setTimeout(r, 50))
  }
  return null
}

/** A client of the joined gateway `key`, signed in as its first admin. */
async function clientOf(t: T, bootstrap: string[], key: string): Promise<MeshClient> {
  const client = await startClient(t, bootstrap, { gateway: key })
  await client.login('admin', PASSWORD)
  return client
}

test('gateway --join: a second gateway joins with one command and its users reach the mesh processor; revoked, the processor refuses it at once', {
  timeout: 60_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const a = await startGateway(t, bootstrap, MEMBERS)
  const adminKey = await apiKeyFor(a)
  const admin = await startClient(t, bootstrap, { gateway: a.publicKeyHex }, { apiKey: adminKey })

  // A processor joined to A by invite: it trusts A alone.
  const pInvite = await admin.createInvite({ note: 'processor' })
  const p = run(t, ['processor', '--join', pInvite.token, '--data', await t.tmp(), '--backend', 'echo'])
  const pKey = await p.ready
  t.ok(pKey, `the processor serves (${p.stderr().slice(-300)})`)
  t.ok(await until(() => routed(a, pKey as string)), 'A uses it')

  // The gateway token, made with the CLI.
  const token = await cliInvite(t, bootstrap, adminKey, ['--role', 'gateway', '--note', 'second gateway'])
  t.ok(/^lmi1\.[A-Za-z0-9_-]+$/.test(token), 'invite --role gateway prints a token')
  const body = JSON.parse(Buffer.from(token.slice(5), 'base64url').toString()) as Record<string, unknown>
  t.is(body.role, 'gateway')
  t.alike(body.gateways, [a.publicKeyHex])

  const data = await t.tmp()
  const started = Date.now()
  const b = run(t, ['gateway', '--join', token, '--data', data, '--admission', 'members'])
  const bKey = await b.ready
  t.ok(bKey, `the joined gateway serves (${b.stderr().slice(-300)})`)
  const user = await clientOf(t, bootstrap, bKey as string)
  const by = await firstAnswer(user, 10_000)
  t.is(
    by,
    pKey,
    `a client of B got its answer from the processor ${Date.now() - started} ms after the command`,
  )
  const listed = (await admin.listInvites()).find((i) => i.role === 'gateway')
  t.alike(
    listed?.members.map((m) => m.key),
    [bKey],
    'A lists B as the member of its gateway invite',
  )

  // Restarted with its data folder only: same key, served again.
  await user.close()
  await b.stop()
  const again = run(t, ['gateway', '--data', data, '--admission', 'members'])
  t.is(await again.ready, bKey, `same key after a restart from --data (${again.stderr().slice(-300)})`)
  const user2 = await clientOf(t, bootstrap, bKey as string)
  t.is(await firstAnswer(user2, 10_000), pKey, 'served again after the restart')

  // Revoked: by the time the admin's revoke returns, the processor has dropped B.
  await admin.revokeInvite(listed?.id as string)
  const after = Date.now()
  let served = 0
  let tries = 0
  while (Date.now() - after < 4_000) {
    tries++
    if ((await answer(user2, 1_000)) !== null) served++
  }
  t.is(served, 0, `none of ${tries} requests to B in the 4 s after the revoke was served`)
  t.ok((await answer(admin)) === pKey, 'A still uses the processor')

  await user2.close()
  await again.stop()
  const refused = run(t, ['gateway', '--data', data])
  t.is(await refused.exited, 1, 'a restart with the revoked invite fails')
  t.ok(refused.stderr().includes('llm-mesh: ERR_INVITE_REVOKED'), refused.stderr().slice(-300))
})

test('gateway --join: an expired gateway token is refused with ERR_INVITE_EXPIRED, a processor token with ERR_INVITE_INVALID', async (t) => {
  const { bootstrap } = await testnet(t)
  const a = await startGateway(t, bootstrap, MEMBERS)
  const admin = await startClient(t, bootstrap, { gateway: a.publicKeyHex }, { apiKey: await apiKeyFor(a) })
  const made = await admin.createInvite({ role: 'gateway', expiresInMs: 1 })
  await new Promise((r) => setTimeout(r, 20))
  const expired = run(t, ['gateway', '--join', made.token, '--data', await t.tmp()])
  t.is(await expired.exited, 1)
  t.ok(expired.stderr().includes('llm-mesh: ERR_INVITE_EXPIRED'), expired.stderr().slice(-300))
  t.is((await admin.listInvites())[0]?.members.length, 0, 'nobody joined')

  const forProcessor = await admin.createInvite()
  const wrong = run(t, ['gateway', '--join', forProcessor.token, '--data', await t.tmp()])
  t.is(await wrong.exited, 1)
  t.ok(wrong.stderr().includes('llm-mesh: ERR_INVITE_INVALID'), wrong.stderr().slice(-300))
})
