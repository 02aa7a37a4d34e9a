/**
 * What the gateway's HTTP front adds, against calling an Ollama-compatible
 * server directly, in the same run:
 *
 * - baseline: the project's Ollama route layer over the instant echo backend,
 *   in a process of its own (bench/ollama-echo-server.ts): the engine's own
 *   HTTP server, nothing in front;
 * - floor: a bare node:http relay → raw @hyperswarm/rpc → an echo in a third
 *   process (bench/bare-relay.ts): the same two extra hops and processes as
 *   the mesh with none of its work, i.e. what this stack costs on this machine
 *   before llm-mesh does anything;
 * - mesh: the gateway's HTTP API (API key checked, limits, usage ledger) →
 *   RPC → a processor with the echo backend.
 *
 * Load from this process with node:http and a keep-alive agent:
 * `POST /api/generate` non-streamed, one at a time (latency: added p50/p99),
 * and streamed, one at a time, timing the first line of the body (added time
 * to first token), the targets taking turns in batches of 250; then 64 in
 * flight to each target (req/s). With `wrk` installed
 * (Debian: apt-get install wrk), req/s is also measured with it at 64
 * connections, and p50/p99 at 1 connection: one request at a time from a
 * client light enough not to crowd the 2 cores the servers share. Both wrk
 * loads take turns between the targets, 1 s each, five times a round (the
 * medians count): this VM's speed moves by up to 2x within seconds, and one
 * 5 s run per target was a draw of the phase it fell in. Rounds alternate
 * between the targets; medians of `--rounds`.
 *
 *   npm run build && node dist/bench/http.js [--requests 3000] [--rounds 3]
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { Agent } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import createTestnet from 'hyperdht/testnet.js'
import {
  fmt,
  median,
  percentile,
  runWrk,
  spawnAccountedGateway,
  spawnEchoProcessor,
  timedPost,
  UNLIMITED,
  untilItAnswers,
} from './lib.js'

const { values } = parseArgs({
  options: { requests: { type: 'string', default: '3000' }, rounds: { type: 'string', default: '3' } },
})
const REQUESTS = Number(values.requests)
const ROUNDS = Number(values.rounds)
const CONCURRENCY = 64
/** wrk (at 64 connections, then at 1): the targets take turns this many times a round, 1 s each (the medians count). */
const WRK_TURNS = 5
const BODY = JSON.stringify({ model: 'echo', prompt: 'hello from the bench', stream: false })
const STREAM_BODY = JSON.stringify({ model: 'echo', prompt: 'hello from the bench, streamed', stream: true })

interface Target {
  name: string
  url: URL
  headers: Record<string, string>
}

const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY })

/** One POST to a target; resolves with ms to the first body byte and to the end. */
function post(target: Target, path: string, body: string): Promise<{ firstMs: number; totalMs: number }> {
  return timedPost(agent, target.url, path, body, target.headers, target.name)
}

/** Sequential requests taking turns in batches, so the VM's drift (2x over minutes) hits every target alike. */
const BATCH = 250

async function latency(
  list: Target[],
  streamed: boolean,
): Promise<Map<string, { p50: number; p99: number; ttft: number }>> {
  const totals = new Map<string, number[]>(list.map((t) => [t.name, []]))
  const firsts = new Map<string, number[]>(list.map((t) => [t.name, []]))
  for (let done = 0; done < REQUESTS; done += BATCH) {
    for (const target of list) {
      for (let i = done; i < Math.min(REQUESTS, done + BATCH); i++) {
        const r = await post(target, '/api/generate', streamed ? STREAM_BODY : BODY)
        totals.get(target.name)?.push(r.totalMs)
        firsts.get(target.name)?.push(r.firstMs)
      }
    }
  }
  const out = new Map<string, { p50: number; p99: number; ttft: number }>()
  for (const target of list) {
    const sorted = (totals.get(target.name) ?? []).sort((a, b) => a - b)
    out.set(target.name, {
      p50: percentile(sorted, 50),
      p99: percentile(sorted, 99),
      ttft: median(firsts.get(target.name) ?? []),
    })
  }
  return out
}

async function throughput(target: Target): Promise<number> {
  let next = 0
  const n = REQUESTS * 4
  const t0 = performance.now()
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < n) {
        next++
        await post(target, '/api/generate', BODY)
      }
    }),
  )
  return n / ((performance.now() - t0) / 1000)
}

/** Starts `node dist/bench/<script> ...args` and resolves with it and its IPC ready message. */
async function spawnBench(
  script: string,
  args: string[] = [],
  env: Record<string, string> = {},
): Promise<{ child: ChildProcess; ready: { url?: string; publicKey?: string } }> {
  const child = spawn(process.execPath, [fileURLToPath(new URL(script, import.meta.url)), ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const ready = await new Promise<{ url?: string; publicKey?: string }>((resolve, reject) => {
    child.on('message', (m: { type?: string; url?: string; publicKey?: string }) => {
      if (m?.type === 'ready') resolve(m)
    })
    child.once('exit', (code) => reject(new Error(`${script} ${args.join(' ')} exited with ${code}`)))
  })
  return { child, ready }
}

// Baseline server.
const baseline = await spawnBench('./ollama-echo-server.js')

const dir = await mkdtemp(join(tmpdir(), 'llm-mesh-bench-'))
const testnet = await createTestnet(3, { host: '127.0.0.1' })
const bootstrap = testnet.bootstrap.map((b) => `${b.host}:${b.port}`).join(',')

// The floor: a bare HTTP → RPC relay and a raw RPC echo, in two processes.
const BOOTSTRAP = JSON.stringify(bootstrap.split(','))
const bareProcessor = await spawnBench('./bare-relay.js', ['processor'], { BOOTSTRAP })
const relay = await spawnBench('./bare-relay.js', ['relay'], {
  BOOTSTRAP,
  PROCESSOR: bareProcessor.ready.publicKey ?? '',
})

// The mesh.
const { gateway, apiKey } = await spawnAccountedGateway(bootstrap, join(dir, 'gw'), {
  limits: { user: UNLIMITED },
  http: { enabled: true, port: 0 },
})
const processor = await spawnEchoProcessor(bootstrap, join(dir, 'proc'), { parallel: CONCURRENCY })
const targets: Target[] = [
  { name: 'direct', url: new URL(baseline.ready.url ?? ''), headers: {} },
  { name: 'floor', url: new URL(relay.ready.url ?? ''), headers: {} },
  { name: 'mesh', url: new URL(gateway.httpUrl ?? ''), headers: { Authorization: `Bearer ${apiKey}` } },
]
// Wait until the relay reaches its processor and the gateway routes to its own.
for (const target of targets) await untilItAnswers(() => post(target, '/api/generate', BODY))

/**
 * `WRK_TURNS` turns of 1 s per target at `connections`, by target name:
 * req/s, p50 and p99 ms from wrk (see runWrk in lib.ts); nothing without wrk.
 */
async function wrkTurns(
  order: Target[],
  connections: number,
): Promise<Map<string, Array<{ rps: number; p50: number; p99: number }>>> {
  const out = new Map<string, Array<{ rps: number; p50: number; p99: number }>>()
  for (let turn = 0; turn < WRK_TURNS; turn++) {
    for (const target of order) {
      const run = await runWrk(
        target.name,
        dir,
        target.url,
        '/api/generate',
        BODY,
        target.headers,
        connections,
        1,
      )
      if (run) out.set(target.name, [...(out.get(target.name) ?? []), run])
    }
  }
  return out
}

interface Round {
  p50: number
  p99: number
  ttft: number
  rps: number
  wrk: number
  /** wrk at 1 connection: p50 and p99 ms (NaN without wrk). */
  wrk1p50: number
  wrk1p99: number
}
const results = new Map<string, Round[]>()
await latency(targets, false) // warm-up
for (let r = 0; r < ROUNDS; r++) {
  const order = r % 2 ? [...targets].reverse() : targets
  const unary = await latency(order, false)
  const streamed = await latency(order, true)
  for (const target of order) {
    const rps = await throughput(target)
    const u = unary.get(target.name)
    const list = results.get(target.name) ?? []
    list.push({
      p50: u?.p50 ?? Number.NaN,
      p99: u?.p99 ?? Number.NaN,
      ttft: streamed.get(target.name)?.ttft ?? Number.NaN,
      rps,
      wrk: Number.NaN,
      wrk1p50: Number.NaN,
      wrk1p99: Number.NaN,
    })
    results.set(target.name, list)
  }
  // wrk at 64 connections, then one at a time with its lighter client: the targets take turns, 1 s each.
  const loaded = await wrkTurns(order, CONCURRENCY)
  const ones = await wrkTurns(order, 1)
  for (const target of order) {
    const last = results.get(target.name)?.at(-1)
    const at64 = loaded.get(target.name) ?? []
    const at1 = ones.get(target.name) ?? []
    if (!last) continue
    if (at64.length > 0) last.wrk = median(at64.map((x) => x.rps))
    if (at1.length > 0) {
      last.wrk1p50 = median(at1.map((x) => x.p50))
      last.wrk1p99 = median(at1.map((x) => x.p99))
    }
  }
}

const med = (name: string, k: keyof Round) => median((results.get(name) ?? []).map((x) => x[k]))
console.log(
  `HTTP, instant echo backend: POST /api/generate, ${REQUESTS} sequential (non-streamed, then streamed) and ${REQUESTS * 4} at ${CONCURRENCY} in flight per round, median of ${ROUNDS} rounds`,
)
console.log(
  '| path | p50 ms | p99 ms | time to first token ms | req/s at 64 in flight (node client) | req/s (wrk, 64 connections) | p50 / p99 ms (wrk, 1 connection) |',
)
console.log('|---|---|---|---|---|---|---|')
for (const [name, label] of [
  ['direct', 'Ollama-compatible server, direct (baseline)'],
  ['floor', 'bare HTTP → RPC relay → RPC echo (the stack alone)'],
  ['mesh', 'gateway HTTP (key, limits, ledger) → processor'],
] as const) {
  console.log(
    `| ${label} | ${fmt(med(name, 'p50'), 3)} | ${fmt(med(name, 'p99'), 3)} | ${fmt(med(name, 'ttft'), 3)} | ${fmt(med(name, 'rps'), 0)} | ${fmt(med(name, 'wrk'), 0)} | ${fmt(med(name, 'wrk1p50'), 3)} / ${fmt(med(name, 'wrk1p99'), 3)} |`,
  )
}
console.log(
  `added by the stack alone (floor): p50 ${fmt(med('floor', 'p50') - med('direct', 'p50'), 3)} ms, time to first token ${fmt(med('floor', 'ttft') - med('direct', 'ttft'), 3)} ms; throughput ratio ${fmt(med('floor', 'rps') / med('direct', 'rps'), 3)}`,
)
console.log(
  `llm-mesh's own share (mesh − floor): p50 ${fmt(med('mesh', 'p50') - med('floor', 'p50'), 3)} ms, time to first token ${fmt(med('mesh', 'ttft') - med('floor', 'ttft'), 3)} ms`,
)
console.log(
  `with wrk at 1 connection: the floor adds p50 ${fmt(med('floor', 'wrk1p50') - med('direct', 'wrk1p50'), 3)} ms, the mesh adds p50 ${fmt(med('mesh', 'wrk1p50') - med('direct', 'wrk1p50'), 3)} ms, p99 ${fmt(med('mesh', 'wrk1p99') - med('direct', 'wrk1p99'), 3)} ms`,
)
console.log(
  `added by the mesh: p50 ${fmt(med('mesh', 'p50') - med('direct', 'p50'), 3)} ms, p99 ${fmt(med('mesh', 'p99') - med('direct', 'p99'), 3)} ms, time to first token ${fmt(med('mesh', 'ttft') - med('direct', 'ttft'), 3)} ms; throughput ratio ${fmt(med('mesh', 'rps') / med('direct', 'rps'), 3)}`,
)

agent.destroy()
await processor.stop()
await gateway.stop()
for (const child of [relay.child, bareProcessor.child, baseline.child]) {
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.disconnect()
  await exited
}
await testnet.destroy()
await rm(dir, { recursive: true, force: true })
