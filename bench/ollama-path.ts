/**
 * The path of a real deployment: a processor whose backend is an Ollama
 * server it calls over HTTP. Four targets in one run, the same instant
 * Ollama-protocol server in its own process behind each
 * (bench/ollama-protocol-server.ts):
 *
 * - direct: that server itself (`/v1/chat/completions`): the ceiling;
 * - portkey: the Portkey AI gateway 1.15.2 (its `ollama` provider, the server
 *   as custom host), installed on first use into bench/.deps;
 * - mesh: llm-mesh's gateway (API key, limits, usage ledger) → RPC → a
 *   processor with the Ollama backend → the server;
 * - mesh-echo: the same mesh with the processor's in-process echo backend
 *   instead of the server (the floor: llm-mesh with no backend call), on a
 *   DHT testnet of its own so each gateway sees only its processor.
 *
 * Every target gets `POST /v1/chat/completions` (OpenAI's format, which all
 * four speak) from wrk: at 64 connections for req/s, and at 1 connection for
 * p50/p99; the targets take turns, `--seconds` each, `--turns` times (this
 * VM's speed moves by up to 2x within seconds: turns spread that over every
 * target alike). CPU per request of each process (user + system, from
 * /proc) is summed over the turns at 64 connections.
 *
 *   npm run build && node dist/bench/ollama-path.js [--turns 8] [--seconds 2]
 *
 * Needs wrk (Debian: apt-get install wrk) and npm (for Portkey, once).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import createTestnet from 'hyperdht/testnet.js'
import {
  fmt,
  median,
  runWrk,
  spawnAccountedGateway,
  spawnEchoProcessor,
  spawnWorker,
  UNLIMITED,
} from './lib.js'

const { values } = parseArgs({
  options: { turns: { type: 'string', default: '8' }, seconds: { type: 'string', default: '2' } },
})
const TURNS = Number(values.turns)
const SECONDS = Number(values.seconds)
const CONNECTIONS = 64
const PORTKEY_VERSION = '1.15.2'
const PATH = '/v1/chat/completions'
const BODY = JSON.stringify({ model: 'echo', messages: [{ role: 'user', content: 'hello from the bench' }] })
const TICK_MS = 1000 / Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim())

interface Target {
  name: string
  url: URL
  headers: Record<string, string>
  /** The processes that do its work, by role, for CPU per request. */
  processes: Record<string, ChildProcess>
}

/** CPU ms (user + system) a process has used so far. */
function cpuMs(child: ChildProcess): number {
  const stat = readFileSync(`/proc/${child.pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) * TICK_MS
}

/** Installs Portkey's gateway into bench/.deps once; returns its server script. */
function portkeyScript(): string {
  const repo = fileURLToPath(new URL('../../', import.meta.url))
  const deps = join(repo, 'bench', '.deps')
  const script = join(deps, 'node_modules', '@portkey-ai', 'gateway', 'build', 'start-server.js')
  if (!existsSync(script)) {
    execFileSync(
      'npm',
      [
        'install',
        '--prefix',
        deps,
        '--no-save',
        '--no-audit',
        '--no-fund',
        `@portkey-ai/gateway@${PORTKEY_VERSION}`,
      ],
      { stdio: 'inherit' },
    )
  }
  return script
}

/** Starts a node script and resolves once `probe` answers. */
async function startServer(args: string[], probe: () => Promise<boolean>): Promise<ChildProcess> {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
  const deadline = Date.now() + 60_000
  while (!(await probe().catch(() => false))) {
    if (child.exitCode !== null) throw new Error(`${args[0]} exited with ${child.exitCode}`)
    if (Date.now() > deadline) throw new Error(`${args[0]} did not answer in 60 s`)
    await new Promise((r) => setTimeout(r, 200))
  }
  return child
}

/** Sends one request to a target: throws unless it answers 200 with the echo's text. */
async function check(target: Target): Promise<boolean> {
  const res = await fetch(new URL(PATH, target.url), {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...target.headers },
    body: BODY,
  })
  const text = await res.text()
  if (res.status !== 200) throw new Error(`${target.name}: HTTP ${res.status}: ${text.slice(0, 300)}`)
  return text.includes('hello from the bench')
}

async function waitFor(target: Target): Promise<void> {
  const deadline = Date.now() + 60_000
  for (;;) {
    try {
      if (await check(target)) return
    } catch (err) {
      if (Date.now() > deadline) throw err
    }
    await new Promise((r) => setTimeout(r, 200))
  }
}

const dir = await mkdtemp(join(tmpdir(), 'llm-mesh-ollama-path-'))
const backend = await new Promise<{ child: ChildProcess; url: string }>((resolve, reject) => {
  const script = fileURLToPath(new URL('./ollama-protocol-server.js', import.meta.url))
  const child = spawn(process.execPath, [script], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  child.on('message', (m: { type?: string; url?: string }) => {
    if (m?.type === 'ready' && m.url) resolve({ child, url: m.url })
  })
  child.once('exit', (code) => reject(new Error(`ollama-protocol-server exited with ${code}`)))
})

const portkeyPort = 18_700 + Math.floor(Math.random() * 1000)
const portkey = await startServer([portkeyScript(), `--port=${portkeyPort}`, '--headless'], async () => {
  await fetch(`http://127.0.0.1:${portkeyPort}/`)
  return true
})

// Two testnets: each gateway sees only its own processor.
const nets = [await createTestnet(3, { host: '127.0.0.1' }), await createTestnet(3, { host: '127.0.0.1' })]
const [ollamaNet, echoNet] = nets.map((n) => n.bootstrap.map((b) => `${b.host}:${b.port}`).join(','))
const gatewayConfig = { limits: { user: UNLIMITED }, http: { enabled: true, port: 0 } }
const mesh = await spawnAccountedGateway(ollamaNet as string, join(dir, 'gw-ollama'), gatewayConfig)
const ollamaProcessor = await spawnWorker([
  'processor',
  '--bootstrap',
  ollamaNet as string,
  '--store',
  join(dir, 'proc-ollama'),
  '--backend',
  'ollama',
  '--ollama-host',
  backend.url,
  '--parallel',
  String(CONNECTIONS),
])
const floor = await spawnAccountedGateway(echoNet as string, join(dir, 'gw-echo'), gatewayConfig)
const echoProcessor = await spawnEchoProcessor(echoNet as string, join(dir, 'proc-echo'), {
  parallel: CONNECTIONS,
})

const targets: Target[] = [
  { name: 'direct', url: new URL(backend.url), headers: {}, processes: { backend: backend.child } },
  {
    name: 'portkey',
    url: new URL(`http://127.0.0.1:${portkeyPort}`),
    headers: { 'x-portkey-provider': 'ollama', 'x-portkey-custom-host': backend.url.replace(/\/$/, '') },
    processes: { gateway: portkey, backend: backend.child },
  },
  {
    name: 'mesh',
    url: new URL(mesh.gateway.httpUrl ?? ''),
    headers: { Authorization: `Bearer ${mesh.apiKey}` },
    processes: { gateway: mesh.gateway.child, processor: ollamaProcessor.child, backend: backend.child },
  },
  {
    name: 'mesh-echo',
    url: new URL(floor.gateway.httpUrl ?? ''),
    headers: { Authorization: `Bearer ${floor.apiKey}` },
    processes: { gateway: floor.gateway.child, processor: echoProcessor.child },
  },
]
for (const target of targets) await waitFor(target)

interface Tally {
  rps: number[]
  p50: number[]
  p99: number[]
  requests: number
  cpu: Record<string, number>
}
const tallies = new Map<string, Tally>(
  targets.map((t) => [t.name, { rps: [], p50: [], p99: [], requests: 0, cpu: {} }]),
)
// One warm-up turn each (JIT, connection pools), not counted.
for (const target of targets) {
  await runWrk(target.name, dir, target.url, PATH, BODY, target.headers, CONNECTIONS, 1)
}
for (let turn = 0; turn < TURNS; turn++) {
  const order = turn % 2 ? [...targets].reverse() : targets
  for (const target of order) {
    const tally = tallies.get(target.name) as Tally
    const before = Object.entries(target.processes).map(([role, p]) => [role, cpuMs(p)] as const)
    const loaded = await runWrk(
      target.name,
      dir,
      target.url,
      PATH,
      BODY,
      target.headers,
      CONNECTIONS,
      SECONDS,
    )
    if (!loaded) throw new Error('wrk is not installed (Debian: apt-get install wrk)')
    for (const [role, ms] of before) {
      tally.cpu[role] = (tally.cpu[role] ?? 0) + cpuMs(target.processes[role] as ChildProcess) - ms
    }
    tally.requests += loaded.requests
    tally.rps.push(loaded.rps)
    const one = await runWrk(target.name, dir, target.url, PATH, BODY, target.headers, 1, 1)
    if (one) {
      tally.p50.push(one.p50)
      tally.p99.push(one.p99)
    }
  }
}

const range = (xs: number[], digits: number) =>
  `${fmt(median(xs), digits)} (${fmt(Math.min(...xs), digits)}–${fmt(Math.max(...xs), digits)})`
const perRequest = (t: Tally, role: string) =>
  t.cpu[role] === undefined ? '–' : fmt((t.cpu[role] * 1000) / t.requests, 0)
console.log(
  `POST ${PATH}, non-streamed; wrk at ${CONNECTIONS} connections (${TURNS} turns of ${SECONDS} s per target, median (min–max)) and at 1 connection (${TURNS} turns of 1 s)`,
)
console.log(
  '| target | req/s at 64 | p50 ms at 1 | p99 ms at 1 | gateway CPU µs/req | processor CPU µs/req | backend CPU µs/req |',
)
console.log('|---|---|---|---|---|---|---|')
for (const target of targets) {
  const t = tallies.get(target.name) as Tally
  console.log(
    `| ${target.name} | ${range(t.rps, 0)} | ${range(t.p50, 3)} | ${range(t.p99, 3)} | ${perRequest(t, 'gateway')} | ${perRequest(t, 'processor')} | ${perRequest(t, 'backend')} |`,
  )
}
const rps = (name: string) => median(tallies.get(name)?.rps ?? [])
const perTurn = (a: string, b: string) =>
  median((tallies.get(a)?.rps ?? []).map((x, i) => x / ((tallies.get(b)?.rps ?? [])[i] ?? Number.NaN)))
console.log(
  `mesh / portkey req/s: ${fmt(rps('mesh') / rps('portkey'), 2)} (median of per-turn ratios ${fmt(perTurn('mesh', 'portkey'), 2)}; target ≥ 3)`,
)
const mesh1 = tallies.get('mesh') as Tally
const echo1 = tallies.get('mesh-echo') as Tally
const procCpu = (t: Tally) => (t.cpu.processor ?? Number.NaN) / t.requests
console.log(
  `processor CPU per request, Ollama backend / echo backend: ${fmt(procCpu(mesh1) / procCpu(echo1), 2)} (target ≤ 2)`,
)
console.log(`mesh / direct req/s: ${fmt(rps('mesh') / rps('direct'), 2)}`)

await echoProcessor.stop()
await ollamaProcessor.stop()
await floor.gateway.stop()
await mesh.gateway.stop()
for (const child of [portkey, backend.child]) {
  const exited = new Promise((resolve) => child.once('exit', resolve))
  if (child.connected) child.disconnect()
  child.kill('SIGTERM')
  await exited
}
for (const n of nets) await n.destroy()
await rm(dir, { recursive: true, force: true })
