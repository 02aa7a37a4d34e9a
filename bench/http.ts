/**
 * What the gateway's HTTP front adds, against calling an Ollama-compatible
 * server directly, in the same run:
 *
 * - baseline: the project's Ollama route layer over the instant echo backend,
 *   in a process of its own (bench/ollama-echo-server.ts): the engine's own
 *   HTTP server, nothing in front;
 * - mesh: the gateway's HTTP API (API key checked, limits, usage ledger) →
 *   RPC → a processor with the echo backend.
 *
 * Load from this process with node:http and a keep-alive agent:
 * `POST /api/generate` non-streamed, one at a time (latency: added p50/p99),
 * then 64 in flight (req/s); and streamed, one at a time, timing the first
 * line of the body (added time to first token). With `wrk` installed
 * (Debian: apt-get install wrk), req/s is also measured with it. Rounds alternate between the
 * two targets; medians of `--rounds`.
 *
 *   npm run build && node dist/bench/http.js [--requests 3000] [--rounds 3]
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { Agent, request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import createTestnet from 'hyperdht/testnet.js'
import { fmt, median, percentile, spawnAccountedGateway, spawnEchoProcessor, UNLIMITED } from './lib.js'

const { values } = parseArgs({
  options: { requests: { type: 'string', default: '3000' }, rounds: { type: 'string', default: '3' } },
})
const REQUESTS = Number(values.requests)
const ROUNDS = Number(values.rounds)
const CONCURRENCY = 64
const BODY = JSON.stringify({ model: 'echo', prompt: 'hello from the bench', stream: false })
const STREAM_BODY = JSON.stringify({ model: 'echo', prompt: 'hello from the bench, streamed', stream: true })

interface Target {
  name: string
  url: URL
  headers: Record<string, string>
}

const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY })

/** One POST; resolves with ms to the first body byte and to the end. */
function post(target: Target, path: string, body: string): Promise<{ firstMs: number; totalMs: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now()
    let first = 0
    const req = request(
      {
        agent,
        host: target.url.hostname,
        port: target.url.port,
        path,
        method: 'POST',
        headers: {
          'Content-Type': 'application/json',
          'Content-Length': Buffer.byteLength(body),
          ...target.headers,
        },
      },
      (res) => {
        if (res.statusCode !== 200) reject(new Error(`${target.name}: HTTP ${res.statusCode}`))
        res.on('data', () => {
          if (first === 0) first = performance.now() - t0
        })
        res.on('end', () => resolve({ firstMs: first, totalMs: performance.now() - t0 }))
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.end(body)
  })
}

async function latency(
  target: Target,
  streamed: boolean,
): Promise<{ p50: number; p99: number; ttft: number }> {
  const totals: number[] = []
  const firsts: number[] = []
  for (let i = 0; i < REQUESTS; i++) {
    const r = await post(target, '/api/generate', streamed ? STREAM_BODY : BODY)
    totals.push(r.totalMs)
    firsts.push(r.firstMs)
  }
  totals.sort((a, b) => a - b)
  return { p50: percentile(totals, 50), p99: percentile(totals, 99), ttft: median(firsts) }
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

// Baseline server.
const baselineChild: ChildProcess = spawn(
  process.execPath,
  [fileURLToPath(new URL('./ollama-echo-server.js', import.meta.url))],
  { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
)
const baselineUrl = await new Promise<string>((resolve) =>
  baselineChild.on('message', (m: { type?: string; url?: string }) => {
    if (m?.type === 'ready') resolve(m.url ?? '')
  }),
)

// The mesh.
const dir = await mkdtemp(join(tmpdir(), 'llm-mesh-bench-'))
const testnet = await createTestnet(3, { host: '127.0.0.1' })
const bootstrap = testnet.bootstrap.map((b) => `${b.host}:${b.port}`).join(',')
const { gateway, apiKey } = await spawnAccountedGateway(bootstrap, join(dir, 'gw'), {
  limits: { user: UNLIMITED },
  http: { enabled: true, port: 0 },
})
const processor = await spawnEchoProcessor(bootstrap, join(dir, 'proc'), { parallel: CONCURRENCY })
const targets: Target[] = [
  { name: 'direct', url: new URL(baselineUrl), headers: {} },
  { name: 'mesh', url: new URL(gateway.httpUrl ?? ''), headers: { Authorization: `Bearer ${apiKey}` } },
]
// Wait until the gateway routes to the processor.
for (;;) {
  try {
    await post(targets[1] as Target, '/api/generate', BODY)
    break
  } catch {
    await new Promise((r) => setTimeout(r, 100))
  }
}

/**
 * req/s from wrk (a C load generator, one thread, 64 connections, 5 s), when
 * it is installed: it takes far less CPU than a Node client, so more of the 2
 * cores go to what is measured.
 */
async function wrkThroughput(target: Target): Promise<number | null> {
  if (spawnSync('wrk', ['--version']).error) return null
  const script = join(dir, `${target.name}.lua`)
  const headers = Object.entries({ 'Content-Type': 'application/json', ...target.headers })
    .map(([k, v]) => `wrk.headers["${k}"] = "${v}"`)
    .join('\n')
  await writeFile(script, `wrk.method = "POST"\nwrk.body = '${BODY}'\n${headers}\n`)
  const out = spawnSync(
    'wrk',
    ['-t1', `-c${CONCURRENCY}`, '-d5s', '-s', script, `${target.url.origin}/api/generate`],
    {
      encoding: 'utf8',
    },
  ).stdout
  if (/Non-2xx/.test(out)) throw new Error(`${target.name}: wrk saw errors\n${out}`)
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]
  return rps ? Number(rps) : null
}

const results = new Map<
  string,
  Array<{ p50: number; p99: number; ttft: number; rps: number; wrk: number | null }>
>()
for (const target of targets) await latency(target, false) // warm-up
for (let r = 0; r < ROUNDS; r++) {
  for (const target of r % 2 ? [...targets].reverse() : targets) {
    const unary = await latency(target, false)
    const streamed = await latency(target, true)
    const rps = await throughput(target)
    const wrk = await wrkThroughput(target)
    const list = results.get(target.name) ?? []
    list.push({ p50: unary.p50, p99: unary.p99, ttft: streamed.ttft, rps, wrk })
    results.set(target.name, list)
  }
}

const med = (name: string, k: 'p50' | 'p99' | 'ttft' | 'rps' | 'wrk') =>
  median((results.get(name) ?? []).map((x) => x[k] ?? Number.NaN))
console.log(
  `HTTP, instant echo backend: POST /api/generate, ${REQUESTS} sequential (non-streamed, then streamed) and ${REQUESTS * 4} at ${CONCURRENCY} in flight per round, median of ${ROUNDS} rounds`,
)
console.log(
  '| path | p50 ms | p99 ms | time to first token ms | req/s at 64 in flight (node client) | req/s (wrk, 64 connections) |',
)
console.log('|---|---|---|---|---|---|')
for (const [name, label] of [
  ['direct', 'Ollama-compatible server, direct (baseline)'],
  ['mesh', 'gateway HTTP (key, limits, ledger) → processor'],
] as const) {
  console.log(
    `| ${label} | ${fmt(med(name, 'p50'), 3)} | ${fmt(med(name, 'p99'), 3)} | ${fmt(med(name, 'ttft'), 3)} | ${fmt(med(name, 'rps'), 0)} | ${fmt(med(name, 'wrk'), 0)} |`,
  )
}
console.log(
  `added by the mesh: p50 ${fmt(med('mesh', 'p50') - med('direct', 'p50'), 3)} ms, p99 ${fmt(med('mesh', 'p99') - med('direct', 'p99'), 3)} ms, time to first token ${fmt(med('mesh', 'ttft') - med('direct', 'ttft'), 3)} ms; throughput ratio ${fmt(med('mesh', 'rps') / med('direct', 'rps'), 3)}`,
)

agent.destroy()
await processor.stop()
await gateway.stop()
await testnet.destroy()
baselineChild.disconnect()
await rm(dir, { recursive: true, force: true })
