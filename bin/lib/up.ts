import { type ChildProcess, spawn } from 'node:child_process'
import { createWriteStream } from 'node:fs'
import { mkdir, readdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import createTestnet, { type Testnet } from 'hyperdht/testnet.js'
import { probeOllama } from '../../facilities/backends/ollama/client.js'
import { TINY_MODEL_NAME, writeTinyModel } from '../../facilities/tiny-model/tiny-model.js'
import { gatewayConfigSchema, parseConfig } from '../../kernel/config.js'
import { normalizeOllamaHost } from '../../kernel/config-load.js'
import { MeshError } from '../../kernel/errors.js'
import { MeshClient } from '../../workers/client/client.worker.js'
import { GatewayWorker } from '../../workers/gateway/gateway.worker.js'
import { ADMIN_USER, createAdmin } from './admin.js'
import { runChat } from './chat.js'
import { MESH_FILE, waitForSignal, writeMeshFile } from './common.js'
import { keyIdOf, readOperatorKey, removeOperatorKey, writeOperatorKey } from './credentials.js'
import { NODE_FLAGS } from './node-flags.js'

const BOOTSTRAP_NODES = 3
const PROCESSOR_START_TIMEOUT_MS = 120_000
const CHILD_STOP_TIMEOUT_MS = 10_000
const OLLAMA_PROBE_TIMEOUT_MS = 1_000
const OPERATOR_KEY_NAME = 'llm-mesh up: local operator'

export interface UpOptions {
  dataDir: string
  processors: number
  chat: boolean
  mesh: string
  bootstrapPort: number
  logLevel: string
  model?: string
  /** The admin's password: set on the admin (created or not); generated and printed when absent and new. */
  adminPassword?: string
  /** Serve the Ollama and OpenAI APIs on 127.0.0.1:httpPort. */
  httpPort?: number
}

/** What a processor child reports once it serves. */
interface ProcessorReady {
  publicKey: string
  backend: string
}

interface ProcessorChild {
  index: number
  child: ChildProcess
  ready: Promise<ProcessorReady>
}

const LLM_MESH_BIN = fileURLToPath(new URL('../llm-mesh.js', import.meta.url))

/** Starts processor `index` as a child that exits when we disconnect from it. */
function startProcessor(
  index: number,
  opts: UpOptions,
  bootstrap: string,
  gatewayKey: string,
): ProcessorChild {
  const log = createWriteStream(join(opts.dataDir, 'logs', `processor-${index}.log`), { flags: 'a' })
  const child = spawn(
    process.execPath,
    [
      ...NODE_FLAGS,
      LLM_MESH_BIN,
      'processor',
      '--store',
      join(opts.dataDir, `processor-${index}`),
      '--bootstrap',
      bootstrap,
      '--mesh',
      opts.mesh,
      '--models',
      join(opts.dataDir, 'models'),
      '--tiny-fallback',
      '--trust-gateway',
      gatewayKey,
      '--log-level',
      opts.logLevel,
    ],
    { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] },
  )
  child.stderr?.pipe(log)
  const ready = new Promise<ProcessorReady>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new MeshError('ERR_TIMEOUT', `processor-${index} did not start in time`)),
      PROCESSOR_START_TIMEOUT_MS,
    )
    child.on('message', (msg: { type?: string; publicKey?: string; backend?: string }) => {
      if (msg?.type !== 'ready') return
      clearTimeout(timer)
      resolve({ publicKey: msg.publicKey ?? '', backend: msg.backend ?? '' })
    })
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      reject(
        new MeshError(
          'ERR_UNAVAILABLE',
          `processor-${index} exited (${signal ?? code}); see ${join(opts.dataDir, 'logs', `processor-${index}.log`)}`,
        ),
      )
    })
  })
  ready.catch(() => {})
  return { index, child, ready }
}

/**
 * Writes the tiny test model to DATA/models when no Ollama answers and the folder has no
 * GGUF file, once, before any processor starts: processors that each made this choice
 * raced, one writing the model and another finding it, and told two different stories.
 * Returns what it did, or null when there was nothing to do.
 */
async function provideTinyModel(modelsDir: string): Promise<string | null> {
  const ollamaHost = normalizeOllamaHost(process.env.OLLAMA_HOST ?? '127.0.0.1:11434')
  if (await probeOllama(ollamaHost, OLLAMA_PROBE_TIMEOUT_MS)) return null
  const files = await readdir(modelsDir).catch(() => [] as string[])
  if (files.some((f) => f.endsWith('.gguf'))) return null
  await writeTinyModel(join(modelsDir, `${TINY_MODEL_NAME}.gguf`))
  return `no Ollama at ${ollamaHost} and no GGUF files in ${modelsDir}: wrote the tiny TEST model ${TINY_MODEL_NAME} there (not a real LLM)`
}

async function stopChild(p: ProcessorChild): Promise<void> {
  const { child } = p
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_STOP_TIMEOUT_MS)
  await exited
  clearTimeout(timer)
}

/**
 * The local admin and the operator key: creates `admin` on first run (password
 * printed once unless given), revokes the key of a previous run, and writes a
 * fresh admin API key to DATA/operator.key for the CLI on this machine.
 * Returns the new key and its id.
 */
async function setUpOperator(gateway: GatewayWorker, opts: UpOptions): Promise<{ id: string; key: string }> {
  const auth = gateway.auth
  if (!auth) throw MeshError.badConfig('up needs accounts (auth.enabled)')
  const existing = auth.user(ADMIN_USER)
  const audit = gateway.audit
  if (!existing) await createAdmin(auth, opts.adminPassword, audit)
  else if (opts.adminPassword) {
    await auth.setPassword(ADMIN_USER, opts.adminPassword)
    await audit.record({ action: 'user.password.reset', actor: 'system', target: existing.id })
  }
  const previous = readOperatorKey(opts.dataDir)
  const previousId = previous ? keyIdOf(previous) : null
  if (previousId) await revokeOperatorKey(gateway, previousId)
  const admin = auth.user(ADMIN_USER)
  if (!admin) throw MeshError.internal('admin user missing')
  const key = await auth.createKey(admin.id, { name: OPERATOR_KEY_NAME })
  const details = { user: admin.id, name: OPERATOR_KEY_NAME }
  await audit.record({ action: 'key.create', actor: 'system', target: key.id, details })
  await writeOperatorKey(opts.dataDir, key.key)
  return { id: key.id, key: key.key }
}

/** Revokes an operator key of `up` (this run's, or a previous one's), recorded as done by the system. */
async function revokeOperatorKey(gateway: GatewayWorker, id: string): Promise<void> {
  const revoked = await gateway.auth?.revokeKey(id, '', true).catch(() => null)
  if (revoked) await gateway.audit.record({ action: 'key.revoke', actor: 'system', target: revoked.id })
}

/** What the mesh `up` started tells the chat that joins it. */
interface RunningMesh {
  bootstrap: string[]
  gatewayKey: string
  /** The operator's API key, valid while `up` runs. */
  apiKey: string
}

const say = (s: string) => process.stderr.write(`${s}\n`)

/**
 * What `up` runs: the loopback DHT bootstrap, the gateway, the processor children and
 * the chat's client, started one step at a time and stopped once, in dependency order.
 */
class LocalMesh {
  private readonly opts: UpOptions
  private testnet: Testnet | null = null
  private gateway: GatewayWorker | null = null
  private client: MeshClient | null = null
  private readonly children: ProcessorChild[] = []
  private operatorKeyId: string | null = null
  private stopping: Promise<void> | null = null

  constructor(opts: UpOptions) {
    this.opts = opts
  }

  /** Starts everything, waits until the gateway routes to every processor, and says so. */
  async start(): Promise<RunningMesh> {
    const bootstrap = await this.startBootstrap()
    const gateway = await this.startGateway(bootstrap)
    const gatewayKey = gateway.publicKeyHex
    const operator = await setUpOperator(gateway, this.opts)
    this.operatorKeyId = operator.id

    const wrote = await provideTinyModel(join(this.opts.dataDir, 'models'))
    if (wrote) say(wrote)
    const started = await this.startProcessors(bootstrap.join(','), gatewayKey)
    await this.waitForRoutes(gateway, started)
    await this.announce(gateway, bootstrap, started)
    return { bootstrap, gatewayKey, apiKey: operator.key }
  }

  private async startBootstrap(): Promise<string[]> {
    this.testnet = await createTestnet(BOOTSTRAP_NODES, { host: '127.0.0.1', port: this.opts.bootstrapPort })
    const bootstrap = this.testnet.bootstrap.map((b) => `${b.host}:${b.port}`)
    say(`DHT bootstrap on ${bootstrap.join(', ')}`)
    return bootstrap
  }

  private async startGateway(bootstrap: string[]): Promise<GatewayWorker> {
    const { dataDir, httpPort } = this.opts
    const gatewayConfig = parseConfig(gatewayConfigSchema, {
      mesh: this.opts.mesh,
      bootstrap,
      store: join(dataDir, 'gateway'),
      log: { level: this.opts.logLevel },
      // Models follow demand: loaded (or copied) where requests queue, unloaded once idle.
      placement: { enabled: true },
      ...(httpPort !== undefined ? { http: { enabled: true, host: '127.0.0.1', port: httpPort } } : {}),
    })
    const gateway = new GatewayWorker(gatewayConfig, {
      logDestination: createWriteStream(join(dataDir, 'logs', 'gateway.log'), { flags: 'a' }),
    })
    this.gateway = gateway
    await gateway.ready()
    return gateway
  }

  private async startProcessors(bootstrap: string, gatewayKey: string): Promise<ProcessorReady[]> {
    for (let i = 0; i < this.opts.processors; i++)
      this.children.push(startProcessor(i, this.opts, bootstrap, gatewayKey))
    return Promise.all(this.children.map((c) => c.ready))
  }

  /** A processor that is ready may not be in the gateway's router yet: waits until all are. */
  private async waitForRoutes(gateway: GatewayWorker, started: ProcessorReady[]): Promise<void> {
    const wanted = new Set(started.map((s) => s.publicKey))
    const deadline = Date.now() + PROCESSOR_START_TIMEOUT_MS
    const router = gateway.router
    while ([...wanted].some((k) => !router.list().some((p) => p.publicKey === k))) {
      if (Date.now() > deadline)
        throw new MeshError('ERR_TIMEOUT', 'the gateway did not see every processor in time')
      await router.refresh()
      await new Promise((r) => setTimeout(r, 100))
    }
  }

  /** Writes DATA/mesh.json for the CLI's other commands, then prints the endpoints and the ready line. */
  private async announce(
    gateway: GatewayWorker,
    bootstrap: string[],
    started: ProcessorReady[],
  ): Promise<void> {
    const { dataDir } = this.opts
    const gatewayKey = gateway.publicKeyHex
    const httpUrl = gateway.httpUrl
    await writeMeshFile(dataDir, {
      mesh: this.opts.mesh,
      bootstrap,
      gateway: gatewayKey,
      pid: process.pid,
      startedAt: new Date().toISOString(),
      ...(httpUrl ? { http: httpUrl } : {}),
    })
    if (httpUrl) {
      process.stdout.write(
        `http: ${httpUrl} (Ollama API at ${httpUrl}, OpenAI API at ${httpUrl}/v1; Authorization: Bearer <API key>)\n`,
      )
    }
    for (const [i, s] of started.entries()) say(`processor-${i} backend: ${s.backend}`)
    const models = [...new Set(gateway.router.list().flatMap((p) => p.models))].join(', ')
    process.stdout.write(
      `llm-mesh ready: gateway ${gatewayKey.slice(0, 16)}… · ${this.opts.processors} processor(s) · models ${models} · bootstrap ${bootstrap[0]} · data ${dataDir}\n`,
    )
  }

  /** The interactive chat with the mesh, as its operator, until the user leaves. */
  async chat(mesh: RunningMesh): Promise<void> {
    const { dataDir, model } = this.opts
    this.client = new MeshClient({
      config: {
        mesh: this.opts.mesh,
        bootstrap: mesh.bootstrap,
        gateway: mesh.gatewayKey,
        log: { level: 'warn' },
      },
      logDestination: createWriteStream(join(dataDir, 'logs', 'chat.log'), { flags: 'a' }),
      apiKey: mesh.apiKey,
    })
    await this.client.ready()
    await runChat({ client: this.client, ...(model ? { model } : {}) })
  }

  /** Stops whatever has started; called again, returns the same promise. */
  stop(): Promise<void> {
    this.stopping ??= this.close()
    return this.stopping
  }

  // Reads each field when it gets to it: a signal can stop the mesh while start() still runs.
  private async close(): Promise<void> {
    await this.client?.close().catch(() => {})
    // The gateway first finishes what it is answering (HTTP streams, RPC calls), taking
    // nothing new, while its processors still run; then they stop, idle.
    await this.gateway?.drain().catch(() => {})
    await Promise.all(this.children.map(stopChild))
    // The operator key works only while `up` runs.
    if (this.operatorKeyId && this.gateway) await revokeOperatorKey(this.gateway, this.operatorKeyId)
    await removeOperatorKey(this.opts.dataDir)
    await this.gateway?.close().catch(() => {})
    await this.testnet?.destroy().catch(() => {})
    await rm(join(this.opts.dataDir, MESH_FILE), { force: true })
  }
}

/**
 * `llm-mesh up`: a DHT bootstrap on 127.0.0.1, a gateway in this process,
 * N processors as children, all state under the data folder; then the chat,
 * or with --no-chat a `llm-mesh ready` line and a wait for SIGINT/SIGTERM.
 */
export async function up(opts: UpOptions): Promise<number> {
  await mkdir(join(opts.dataDir, 'logs'), { recursive: true })
  const mesh = new LocalMesh(opts)
  // Our own SIGTERM and a closed terminal still tear the tree down.
  const onTerm = () => void mesh.stop().then(() => process.exit(0))
  process.once('SIGTERM', onTerm)
  process.once('SIGHUP', onTerm)
  try {
    const running = await mesh.start()
    if (!opts.chat) {
      process.off('SIGTERM', onTerm)
      await waitForSignal()
      say('stopping…')
      await mesh.stop()
      return 0
    }
    await mesh.chat(running)
    await mesh.stop()
    return 0
  } catch (err) {
    await mesh.stop()
    throw err
  } finally {
    process.off('SIGTERM', onTerm)
    process.off('SIGHUP', onTerm)
  }
}
