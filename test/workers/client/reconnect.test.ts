import { cp, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import test from 'brittle'
import { AuthFacility } from '../../../facilities/auth/auth.facility.js'
import { LogFacility } from '../../../facilities/log.facility.js'
import { StoreFacility } from '../../../facilities/store.facility.js'
import { authConfigSchema, parseConfig } from '../../../kernel/config.js'
import { MeshError } from '../../../kernel/errors.js'
import type { MeshClient } from '../../../workers/client/client.worker.js'
import {
  FAST_REGISTRY,
  passwordOf,
  type SpawnedWorker,
  spawnProcessor,
  spawnWorker,
  startClient,
  startGateway,
  type T,
  TEST_AUTH,
  testnet,
  until,
} from '../../helpers/mesh.js'

/** Generous for a busy 2-core machine; a recovery normally takes a second or two. */
const RECOVERY_BOUND_MS = 20_000
/**
 * After a kill the first call's watchdog pings the dead gateway after 2 s and gives up on it
 * 2 s later: ~4 s, timers rather than CPU (without the watchdog: its 10 s timeout and more).
 */
const KILLED_BOUND_MS = 30_000
const MESH_SECRET = 'reconnect-test-mesh-secret-0123456789abcdef'
const CHAT = { model: 'echo', messages: [{ role: 'user' as const, content: 'hello again' }] }

/** An admin (password `passwordOf('admin')`) and an API key of it, written into a stopped gateway's store. */
async function seedAccounts(dir: string): Promise<string> {
  const log = new LogFacility({ level: 'silent' })
  const store = new StoreFacility({ dir })
  await store.ready()
  const auth = new AuthFacility({
    store,
    config: parseConfig(authConfigSchema, TEST_AUTH),
    logger: log.logger,
  })
  try {
    await auth.ready()
    const user = await auth.createUser({ username: 'admin', password: passwordOf('admin'), role: 'admin' })
    return (await auth.createKey(user.id, { name: 'reconnect' })).key
  } finally {
    await auth.close()
    await store.close()
  }
}

/** A gateway config file: fast processor registry, cheap password hashes, and `extra`. */
async function gatewayConfigFile(t: T, extra: Record<string, unknown> = {}): Promise<string> {
  const file = join(await t.tmp(), 'gateway.json')
  await writeFile(
    file,
    JSON.stringify({ registry: FAST_REGISTRY, ...extra, auth: { ...TEST_AUTH, ...(extra.auth ?? {}) } }),
  )
  return file
}

/** Runs `fn` and how long it took; a failure is rethrown with the time in its message. */
async function timed<R>(fn: () => Promise<R>): Promise<{ value: R; ms: number }> {
  const started = Date.now()
  const value = await fn()
  return { value, ms: Date.now() - started }
}

async function gatewayOf(client: MeshClient): Promise<string> {
  return (await client.status()).publicKey
}

test('reconnect: clients kept open (API key, password) survive a restart of their gateway', async (t) => {
  t.timeout(120_000)
  const { bootstrap } = await testnet(t)
  const store = await t.tmp()
  const apiKey = await seedAccounts(store)
  const args = ['--store', store, '--config', await gatewayConfigFile(t)]
  let gateway: SpawnedWorker = await spawnWorker(t, 'gateway', bootstrap, args)
  await spawnProcessor(t, bootstrap, ['--store', await t.tmp(), '--backend', 'echo'])

  const byKey = await startClient(t, bootstrap, {}, { apiKey })
  const byPassword = await startClient(t, bootstrap)
  await byPassword.login('admin', passwordOf('admin'))
  t.ok(
    await until(async () => (await byKey.models()).length > 0, RECOVERY_BOUND_MS),
    'the gateway found the processor',
  )
  t.is((await byKey.chat(CHAT)).text.length > 0, true, 'API-key client chats')
  t.is((await byPassword.chat(CHAT)).text.length > 0, true, 'password client chats')

  await gateway.stop()
  // A call made while no gateway answers waits for one (within reconnect.timeoutMs).
  const waiting = byPassword.whoami()
  await new Promise((resolve) => setTimeout(resolve, 1_000))
  gateway = await spawnWorker(t, 'gateway', bootstrap, args)
  const back = Date.now()
  t.is((await waiting).user.username, 'admin', 'a call made while the gateway was down succeeds')
  const waited = Date.now() - back

  // Nothing but the calls themselves: the clients find the gateway again.
  const status = await timed(() => byKey.status())
  t.is(status.value.publicKey, gateway.publicKey, 'API-key client: status from the restarted gateway')
  const models = await timed(() => byPassword.models())
  t.ok(Array.isArray(models.value), 'password client: models')
  t.ok((await byPassword.status()).publicKey === gateway.publicKey, 'password client: status')
  t.ok((await byKey.whoami()).user.username === 'admin', 'API-key client: whoami')
  const chats = await timed(async () => [await byKey.chat(CHAT), await byPassword.chat(CHAT)])
  t.ok(
    chats.value.every((r) => r.text.length > 0),
    'both chat after the restart',
  )
  const streamed = byPassword.chat({ ...CHAT, stream: true })
  let text = ''
  for await (const part of streamed) if (!part.done) text += part.text
  t.ok(text.length > 0, 'password client streams')
  t.comment(
    `SIGTERM: a pending call answered ${waited} ms after the gateway was ready; next calls: api-key ${status.ms} ms, password ${models.ms} ms; two chats ${chats.ms} ms`,
  )
  t.ok(status.ms < RECOVERY_BOUND_MS && models.ms < RECOVERY_BOUND_MS)

  // Killed: no close reaches the clients, whose connections look open until a call times out on them.
  await gateway.kill()
  gateway = await spawnWorker(t, 'gateway', bootstrap, args)
  const [keyStatus, passwordModels] = await Promise.all([
    timed(() => byKey.status()),
    timed(() => byPassword.models()),
  ])
  t.is(keyStatus.value.publicKey, gateway.publicKey, 'after a kill: API-key client status')
  t.ok(Array.isArray(passwordModels.value), 'after a kill: password client models')
  t.ok((await byPassword.chat(CHAT)).text.length > 0, 'after a kill: password client chats')
  t.comment(`SIGKILL: next calls: api-key ${keyStatus.ms} ms, password ${passwordModels.ms} ms`)
  t.ok(keyStatus.ms < KILLED_BOUND_MS && passwordModels.ms < KILLED_BOUND_MS)
})

test('reconnect: with its gateway gone for good, a client fails over; a password session must sign in again', async (t) => {
  t.timeout(120_000)
  const { bootstrap } = await testnet(t)
  const storeA = await t.tmp()
  const apiKey = await seedAccounts(storeA)
  // The same accounts on both gateways (an operator's copy), but each signs its own tokens.
  const storeB = await t.tmp()
  await cp(storeA, storeB, { recursive: true })
  // The device file marks a store as this directory's; a copy must drop it (it gets a new one).
  await rm(join(storeB, 'CORESTORE'))
  const secret = ['--mesh-secret', MESH_SECRET]
  const a = await spawnWorker(t, 'gateway', bootstrap, [
    '--store',
    storeA,
    '--config',
    await gatewayConfigFile(t),
    ...secret,
    '--gateway-index',
    '0',
  ])
  await spawnProcessor(t, bootstrap, ['--store', await t.tmp(), '--backend', 'echo', ...secret])
  const byKey = await startClient(t, bootstrap, {}, { apiKey })
  const byPassword = await startClient(t, bootstrap)
  await byPassword.login('admin', passwordOf('admin'))
  t.is(await gatewayOf(byKey), a.publicKey)
  t.is(await gatewayOf(byPassword), a.publicKey)

  const b = await spawnWorker(t, 'gateway', bootstrap, [
    '--store',
    storeB,
    '--config',
    await gatewayConfigFile(t, { auth: { jwtSecret: 'another-gateway-signs-its-own-tokens-0123456789' } }),
    ...secret,
    '--gateway-index',
    '1',
  ])
  t.not(b.publicKey, a.publicKey)
  await a.stop()

  const failover = await timed(() => gatewayOf(byKey))
  t.is(failover.value, b.publicKey, 'API-key client failed over to the other gateway')
  t.ok(
    await until(async () => (await byKey.models()).length > 0, RECOVERY_BOUND_MS),
    'the other gateway serves the processor',
  )
  t.ok((await byKey.chat(CHAT)).text.length > 0, 'API-key client chats there')

  const refused = await timed(async () => {
    try {
      await byPassword.models()
      return null
    } catch (err) {
      return err as MeshError
    }
  })
  t.ok(refused.value instanceof MeshError, 'password client: refused')
  t.is(refused.value?.code, 'ERR_AUTH_REQUIRED', 'told to sign in again')
  t.ok(refused.value?.message.includes('sign in again'), refused.value?.message)
  t.is(byPassword.user, null, 'the session is gone')
  await byPassword.login('admin', passwordOf('admin'))
  t.ok((await byPassword.chat(CHAT)).text.length > 0, 'after login() it chats')
  t.is(await gatewayOf(byPassword), b.publicKey)
  t.comment(`failover: api-key ${failover.ms} ms, password refused after ${refused.ms} ms`)
})

test('reconnect: no gateway within reconnect.timeoutMs is ERR_UNAVAILABLE naming the gateway tried', async (t) => {
  t.timeout(60_000)
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, { auth: { enabled: false } })
  const key = gateway.publicKeyHex
  const client = await startClient(t, bootstrap, { reconnect: { timeoutMs: 2_000, connectTimeoutMs: 1_000 } })
  t.is((await client.status()).publicKey, key)
  await gateway.close()

  const started = Date.now()
  const err = await client.status().then(
    () => null,
    (e: unknown) => e as MeshError,
  )
  const ms = Date.now() - started
  t.is(err?.code, 'ERR_UNAVAILABLE')
  t.ok(err?.message.includes(key.slice(0, 8)), `names the gateway: ${err?.message}`)
  t.ok(ms >= 1_500 && ms < 15_000, `gave up after a bounded wait (${ms} ms)`)
})

test('reconnect: a gateway that is draining refuses new work, and the client sends it to another', async (t) => {
  const { bootstrap } = await testnet(t)
  const open = { auth: { enabled: false } }
  const first = await startGateway(t, bootstrap, open)
  const second = await startGateway(t, bootstrap, open)
  await spawnProcessor(t, bootstrap, ['--store', await t.tmp(), '--backend', 'echo'])
  const client = await startClient(t, bootstrap, { reconnect: { timeoutMs: 10_000 } })
  t.ok(
    await until(async () => (await client.status()).processors.length === 1, RECOVERY_BOUND_MS),
    'the client is served',
  )
  const used = (await client.status()).publicKey
  const [draining, other] = used === first.publicKeyHex ? [first, second] : [second, first]
  t.ok(
    await until(() => other.router.size === 1, RECOVERY_BOUND_MS),
    'the other gateway sees the processor too',
  )
  // Its gateway stops taking work (as on SIGTERM, before it closes): the next chat, which
  // that gateway refuses unread, goes to the other one.
  void draining.drain()
  const answer = await client.chat(CHAT)
  t.is(answer.text, 'hello again', 'answered')
  t.is((await client.status()).publicKey, other.publicKeyHex, 'by the other gateway')
})
