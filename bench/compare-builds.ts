/**
 * Two builds of llm-mesh side by side, for changes too small for separate runs
 * of bench/http.ts to resolve (this VM's speed drifts by 2x over minutes): each
 * checkout's own gateway (accounted, HTTP on) and echo processor, on one
 * loopback testnet under different mesh names, and sequential non-streamed
 * `POST /api/generate` alternating between the two in batches, so the drift
 * hits both alike. Prints each build's p50 and p99, its p50 per fifth of the
 * run (the two should move together), and the CPU time its gateway's and its
 * processor's main threads spent per request (from /proc/<pid>/task/<pid>/schedstat,
 * in ns: far steadier than latency, and what a change to the request path
 * moves first).
 *
 *   npm run build                      # in both checkouts
 *   node dist/bench/compare-builds.js <checkout A> <checkout B> [--requests 20000] [--batch 250]
 *
 * A checkout of an older commit: `git worktree add /tmp/old <commit>`, link
 * node_modules into it, `npx tsc -p .` there.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { Agent, request } from 'node:http'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import createTestnet from 'hyperdht/testnet.js'
import { fmt, median, percentile, UNLIMITED } from './lib.js'

type BenchLib = typeof import('./lib.js')

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { requests: { type: 'string', default: '20000' }, batch: { type: 'string', default: '250' } },
})
if (positionals.length !== 2) {
  console.error('usage: compare-builds <checkout A> <checkout B> [--requests N] [--batch N]')
  process.exit(2)
}
const REQUESTS = Number(values.requests)
const BATCH = Number(values.batch)
const BODY = JSON.stringify({ model: 'echo', prompt: 'hello from the bench', stream: false })

interface Mesh {
  checkout: string
  url: URL
  apiKey: string
  agent: Agent
  times: number[]
  /** Main-thread pids of the gateway and the processor. */
  pids: [number, number]
  /** ns of CPU their main threads spent during this build's batches. */
  cpuNs: [number, number]
  stop(): Promise<void>
}

/** ns a process's main thread has run so far (Linux); 0 where /proc has no schedstat. */
async function cpuNs(pid: number): Promise<number> {
  try {
    return Number((await readFile(`/proc/${pid}/task/${pid}/schedstat`, 'utf8')).split(' ')[0])
  } catch {
    return 0
  }
}

function post(mesh: Mesh): Promise<number> {
  return new Promise((done, reject) => {
    const t0 = performance.now()
    const req = request(
      {
        agent: mesh.agent,
        host: mesh.url.hostname,
        port: mesh.url.port,
        path: '/api/generate',
        method: 'POST',
        headers: {
          'Content-Type': 'application/json',
          'Content-Length': Buffer.byteLength(BODY),
          Authorization: `Bearer ${mesh.apiKey}`,
        },
      },
      (res) => {
        if (res.statusCode !== 200) reject(new Error(`${mesh.checkout}: HTTP ${res.statusCode}`))
        res.on('data', () => {})
        res.on('end', () => done(performance.now() - t0))
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.end(BODY)
  })
}

const dir = await mkdtemp(join(tmpdir(), 'llm-mesh-compare-'))
const testnet = await createTestnet(3, { host: '127.0.0.1' })
const bootstrap = testnet.bootstrap.map((b) => `${b.host}:${b.port}`).join(',')
const meshes: Mesh[] = []
for (const [i, checkout] of positionals.entries()) {
  const lib = (await import(pathToFileURL(join(resolve(checkout), 'dist/bench/lib.js')).href)) as BenchLib
  // Each build's workers on a mesh of their own: neither gateway routes to the other's processor.
  process.env.LLM_MESH_MESH = `compare-${i}`
  const { gateway, apiKey } = await lib.spawnAccountedGateway(bootstrap, join(dir, `gw-${i}`), {
    limits: { user: UNLIMITED },
    http: { enabled: true, port: 0 },
  })
  const processor = await lib.spawnEchoProcessor(bootstrap, join(dir, `proc-${i}`))
  meshes.push({
    checkout,
    url: new URL(gateway.httpUrl ?? ''),
    apiKey,
    agent: new Agent({ keepAlive: true, maxSockets: 1 }),
    times: [],
    pids: [gateway.child.pid ?? 0, processor.child.pid ?? 0],
    cpuNs: [0, 0],
    stop: async () => {
      await gateway.stop()
      await processor.stop()
    },
  })
}

// Wait until each gateway routes to its processor, then warm both up.
for (const mesh of meshes) {
  for (;;) {
    try {
      await post(mesh)
      break
    } catch {
      await new Promise((r) => setTimeout(r, 100))
    }
  }
  for (let i = 0; i < 3000; i++) await post(mesh)
}

for (let done = 0; done < REQUESTS; done += BATCH) {
  for (const mesh of meshes) {
    const before = await Promise.all(mesh.pids.map(cpuNs))
    for (let i = 0; i < BATCH; i++) mesh.times.push(await post(mesh))
    const after = await Promise.all(mesh.pids.map(cpuNs))
    for (const k of [0, 1]) mesh.cpuNs[k] += (after[k] ?? 0) - (before[k] ?? 0)
  }
}

console.log(
  `POST /api/generate, non-streamed, ${REQUESTS} sequential per build in alternating batches of ${BATCH}`,
)
console.log(
  '| checkout | p50 ms | p99 ms | p50 per fifth of the run, ms | gateway CPU µs/request | processor CPU µs/request |',
)
console.log('|---|---|---|---|---|---|')
for (const mesh of meshes) {
  const fifth = Math.floor(mesh.times.length / 5)
  const fifths = [0, 1, 2, 3, 4].map((k) => fmt(median(mesh.times.slice(k * fifth, (k + 1) * fifth))))
  const sorted = [...mesh.times].sort((a, b) => a - b)
  console.log(
    `| ${mesh.checkout} | ${fmt(percentile(sorted, 50))} | ${fmt(percentile(sorted, 99))} | ${fifths.join(' ')} | ${fmt(mesh.cpuNs[0] / 1000 / mesh.times.length, 1)} | ${fmt(mesh.cpuNs[1] / 1000 / mesh.times.length, 1)} |`,
  )
}

for (const mesh of meshes) await mesh.stop()
await testnet.destroy()
await rm(dir, { recursive: true, force: true })
