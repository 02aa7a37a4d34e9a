import { type ChildProcess, spawn } from 'node:child_process'
import { createServer as createNetServer } from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import createTestnet, { type Testnet } from 'hyperdht/testnet.js'
import { TINY_MODEL_NAME, writeTinyModel } from '../../facilities/tiny-model/tiny-model.js'
import { type ConfigInput, gatewayConfigSchema, parseConfig } from '../../kernel/config.js'
import { deepMerge } from '../../kernel/config-load.js'
import { MeshClient } from '../../workers/client/client.worker.js'
import { GatewayWorker } from '../../workers/gateway/gateway.worker.js'

/** The subset of brittle's `t` the helpers need. */
export interface T {
  teardown(fn: () => unknown, opts?: { order?: number }): void
  tmp(): Promise<string>
}

export const BIN = fileURLToPath(new URL('../../bin/llm-mesh.js', import.meta.url))

/** Registry timings short enough for tests to see joins and deaths quickly. */
export const FAST_REGISTRY = {
  lookupIntervalMs: 500,
  heartbeatIntervalMs: 300,
  heartbeatTimeoutMs: 600,
  maxMissed: 2,
  redialMaxMs: 1_000,
  goneAfterMs: 3_000,
}

/** A 127.0.0.1 port with nothing listening on it. */
export async function closedPort(): Promise<number> {
  const srv = createNetServer()
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  const addr = srv.address()
  const port = typeof addr === 'object' && addr !== null ? addr.port : 0
  await new Promise<void>((resolve) => srv.close(() => resolve()))
  return port
}

/** Logs stay quiet unless LLM_MESH_TEST_LOG is set. */
export const TEST_LOG = { level: process.env.LLM_MESH_TEST_LOG ?? 'silent' }

export async function testnet(t: T): Promise<{ net: Testnet; bootstrap: string[] }> {
  const net = await createTestnet(3, { teardown: t.teardown.bind(t), host: '127.0.0.1' })
  return { net, bootstrap: net.bootstrap.map((b) => `${b.host}:${b.port}`) }
}

/** Gateways started by this test process: processors spawned later trust them (their firewall). */
export const trustedGateways = new Set<string>()

/** Cheap password hashing for tests (the default cost is 2^15). */
export const TEST_AUTH = { scrypt: { N: 1024 } }

export async function startGateway(
  t: T,
  bootstrap: string[],
  extra: ConfigInput = {},
): Promise<GatewayWorker> {
  const config = parseConfig(
    gatewayConfigSchema,
    deepMerge(
      { bootstrap, store: await t.tmp(), log: TEST_LOG, registry: FAST_REGISTRY, auth: TEST_AUTH },
      extra,
    ),
  )
  const gateway = new GatewayWorker(config)
  t.teardown(() => gateway.close(), { order: 1 })
  await gateway.ready()
  trustedGateways.add(gateway.publicKey.toString('hex'))
  return gateway
}

/** Password of the users `apiKeyFor` makes. */
export const passwordOf = (username: string) => `password-of-${username}`

/** A new API key of `username` (made, with `role`, if missing), straight through the gateway's auth. */
export async function apiKeyFor(
  gateway: GatewayWorker,
  username = 'admin',
  role: 'admin' | 'user' = 'admin',
  limits: Record<string, number | null> = {},
): Promise<string> {
  const auth = gateway.auth
  if (!auth) throw new Error('the gateway has no accounts')
  if (!auth.user(username)) await auth.createUser({ username, password: passwordOf(username), role, limits })
  const user = auth.user(username)
  if (!user) throw new Error('user not created')
  return (await auth.createKey(user.id, { name: 'test' })).key
}

export async function startClient(
  t: T,
  bootstrap: string[],
  extra: ConfigInput = {},
  opts: { apiKey?: string } = {},
): Promise<MeshClient> {
  const client = new MeshClient({
    config: deepMerge({ bootstrap, log: TEST_LOG }, extra),
    ...(opts.apiKey ? { apiKey: opts.apiKey } : {}),
  })
  t.teardown(() => client.close(), { order: 0 })
  await client.ready()
  return client
}

export interface SpawnedWorker {
  child: ChildProcess
  publicKey: string
  backend: string
  /** SIGKILL: no drain, no unannounce. */
  kill(): Promise<void>
  stop(): Promise<void>
}

export type SpawnedProcessor = SpawnedWorker

/** Runs `llm-mesh processor` as a real child process, resolved once it serves. */
export function spawnProcessor(t: T, bootstrap: string[], args: string[]): Promise<SpawnedWorker> {
  return spawnWorker(t, 'processor', bootstrap, args)
}

/** Runs `llm-mesh <command>` (gateway or processor) as a real child process, resolved once it serves. */
export async function spawnWorker(
  t: T,
  command: 'gateway' | 'processor',
  bootstrap: string[],
  args: string[],
): Promise<SpawnedWorker> {
  const child = spawn(
    process.execPath,
    [BIN, command, '--bootstrap', bootstrap.join(','), '--log-level', TEST_LOG.level, ...args],
    {
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
      env: { ...process.env, LLM_MESH_TRUSTED_GATEWAYS: [...trustedGateways].join(',') },
    },
  )
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const stopWith = async (signal: NodeJS.Signals) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal)
    await exited
  }
  t.teardown(() => stopWith('SIGKILL'), { order: 0 })
  const ready = await new Promise<{ publicKey: string; backend: string }>((resolve, reject) => {
    child.on('message', (msg: { type?: string; publicKey?: string; backend?: string }) => {
      if (msg?.type === 'ready') resolve({ publicKey: msg.publicKey ?? '', backend: msg.backend ?? '' })
    })
    child.once('exit', (code) => reject(new Error(`${command} exited with ${code} before it was ready`)))
  })
  if (command === 'gateway') trustedGateways.add(ready.publicKey)
  return { child, ...ready, kill: () => stopWith('SIGKILL'), stop: () => stopWith('SIGTERM') }
}

/** A llama.cpp processor child serving the tiny test model (written to a folder of its own). */
export async function spawnTinyProcessor(
  t: T,
  bootstrap: string[],
  args: string[] = [],
): Promise<SpawnedWorker> {
  const models = await t.tmp()
  await writeTinyModel(join(models, `${TINY_MODEL_NAME}.gguf`))
  return spawnLlamaProcessor(t, bootstrap, models, args)
}

/** A llama.cpp processor child on the GGUF files in `models` (maybe none yet), with a store of its own. */
export async function spawnLlamaProcessor(
  t: T,
  bootstrap: string[],
  models: string,
  args: string[] = [],
): Promise<SpawnedWorker> {
  return spawnProcessor(t, bootstrap, [
    '--store',
    await t.tmp(),
    '--models',
    models,
    '--backend',
    'llamacpp',
    ...args,
  ])
}

/** Polls `check` until it returns true or `timeoutMs` passes. */
export async function until(
  check: () => boolean | Promise<boolean>,
  timeoutMs = 15_000,
  stepMs = 50,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await check()) return true
    await new Promise((r) => setTimeout(r, stepMs))
  }
  return false
}

export interface SpawnedBootstrap {
  /** host:port of its first node, as workers' `--bootstrap` takes it. */
  bootstrap: string[]
  child: ChildProcess
  /** SIGKILL: its DHT nodes vanish without a word. */
  kill(): Promise<void>
}

/** `llm-mesh bootstrap` (a 3-node DHT) as its own process, resolved once it is ready. */
export async function spawnBootstrap(t: T): Promise<SpawnedBootstrap> {
  const port = await closedPort()
  const child: ChildProcess = spawn(process.execPath, [BIN, 'bootstrap', '--port', String(port)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const kill = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await exited
  }
  t.teardown(kill, { order: 2 })
  await new Promise<void>((resolve, reject) => {
    child.stdout?.on('data', (d: Buffer) => {
      if (d.toString().includes('bootstrap ready')) resolve()
    })
    child.once('exit', (code) => reject(new Error(`bootstrap exited with ${code}`)))
  })
  return { bootstrap: [`127.0.0.1:${port}`], child, kill }
}

/** Asks `echo` until an answer comes from `publicKey`; the ms it took from `since`, or null past `limitMs`. */
export async function servedBy(
  client: MeshClient,
  publicKey: string,
  since: number,
  limitMs: number,
): Promise<number | null> {
  const deadline = since + limitMs
  while (Date.now() < deadline) {
    const answer = await client
      .generate({ model: 'echo', prompt: 'ping', timeoutMs: Math.max(500, deadline - Date.now()) })
      .catch(() => null)
    if (answer?.text === 'ping' && answer.processor === publicKey) return Date.now() - since
    await new Promise((r) => setTimeout(r, 50))
  }
  return null
}

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN
