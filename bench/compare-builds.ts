/**
 * Two builds of llm-mesh side by side, for changes too small for separate runs
 * of bench/http.ts to resolve (this VM's speed drifts by 2x over minutes): each
 * checkout's own gateway (accounted, HTTP on) and echo processor, on one
 * loopback testnet under different mesh names, and sequential non-streamed
 * `POST /api/generate` (with --stream: streamed, timed to the first byte of
 * the body) alternating between the two in batches, so the drift
 * hits both alike. Prints each build's p50 and p99, its p50 per fifth of the
 * run (the two should move together), and the CPU time its gateway and its
 * processor spent per request, main thread and all threads (from
 * /proc/<pid>/task/<tid>/schedstat, in ns): far steadier than latency, and on
 * two cores, where one request at a time keeps every process on the path
 * waiting for the one before, what the latency is mostly made of.
 *
 *   npm run build                      # in both checkouts
 *   node dist/bench/compare-builds.js <checkout A> <checkout B> [--requests 20000] [--batch 250] [--stream]
 *   node dist/bench/compare-builds.js <checkout A> <checkout B> --wrk 64 [--turns 10] [--seconds 3] [--together]
 *
 * With --wrk C: load at C connections from wrk (Debian: apt-get install wrk)
 * instead, the builds taking turns of --seconds each; prints each build's
 * median req/s and gateway CPU per request over the turns, and the ratio of
 * the two builds in each turn pair (B / A), whose median is the comparison.
 * With --together, both builds are loaded at once in every turn, each by its
 * own wrk: they share the machine's phase exactly (this VM's speed moves by
 * up to 2x within seconds, so even back-to-back turns can fall in different
 * phases), at the price of each seeing a machine busier than it alone would.
 *
 * With --ollama, each build's processor has the Ollama backend instead of the
 * echo (the path users run: the processor calls Ollama over HTTP), both
 * against one Ollama-protocol server in a process of its own
 * (bench/ollama-protocol-server.ts, of the checkout that runs this script).
 * --path picks the gateway route: /api/generate (the default), /api/chat or
 * /v1/chat/completions. The wrk mode then also prints the processor's CPU:
 *   node dist/bench/compare-builds.js /tmp/old . --wrk 64 --ollama --path /v1/chat/completions
 *
 * --gateway-a JSON / --gateway-b JSON: config merged into build A's / B's gateway config.
 * With the same checkout twice, an A/B of a setting on one build, e.g. metrics and tracing
 * off (A) vs on (B):
 *   node dist/bench/compare-builds.js . . --wrk 64 --gateway-a '{"http":{"metrics":false},"tracing":{"enabled":false}}'
 *
 * A checkout of an older commit: `git worktree add /tmp/old <commit>`, link
 * node_modules into it, `npx tsc -p .` there.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { Agent } from 'node:http'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import createTestnet from 'hyperdht/testnet.js'
import type { ConfigInput } from '../kernel/config.js'
import { deepMerge } from '../kernel/config-load.js'
import { fmt, median, percentile, runWrk, timedPost, UNLIMITED, untilItAnswers } from './lib.js'

type BenchLib = typeof import('./lib.js')

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    requests: { type: 'string', default: '20000' },
    batch: { type: 'string', default: '250' },
    stream: { type: 'boolean', default: false },
    wrk: { type: 'string' },
    turns: { type: 'string', default: '10' },
    seconds: { type: 'string', default: '3' },
    together: { type: 'boolean', default: false },
    ollama: { type: 'boolean', default: false },
    path: { type: 'string', default: '/api/generate' },
    'gateway-a': { type: 'string', default: '{}' },
    'gateway-b': { type: 'string', default: '{}' },
  },
})
const GATEWAY_CONFIG = [JSON.parse(values['gateway-a']), JSON.parse(values['gateway-b'])] as ConfigInput[]
if (positionals.length !== 2) {
  console.error(
    'usage: compare-builds <checkout A> <checkout B> [--ollama] [--path P] [--requests N] [--batch N] [--stream] | --wrk C [--turns N] [--seconds S] [--together]',
  )
  process.exit(2)
}
const REQUESTS = Number(values.requests)
const BATCH = Number(values.batch)
// --stream: streamed requests, timed to the first byte of the body (time to first token).
const STREAM = values.stream === true
const PATH = values.path
const PROMPT = 'hello from the bench'
const BODIES: Record<string, object> = {
  '/api/generate': { model: 'echo', prompt: PROMPT, stream: STREAM },
  '/api/chat': { model: 'echo', messages: [{ role: 'user', content: PROMPT }], stream: STREAM },
  '/v1/chat/completions': { model: 'echo', messages: [{ role: 'user', content: PROMPT }], stream: STREAM },
}
if (!BODIES[PATH]) {
  console.error(`--path: one of ${Object.keys(BODIES).join(', ')}`)
  process.exit(2)
}
const BODY = JSON.stringify(BODIES[PATH])
const WRK_CONNECTIONS = values.wrk === undefined ? null : Number(values.wrk)
if (WRK_CONNECTIONS !== null && !(WRK_CONNECTIONS >= 1)) {
  console.error('--wrk: a number of connections')
  process.exit(2)
}

interface Mesh {
  checkout: string
  url: URL
  apiKey: string
  agent: Agent
  times: number[]
  /** Pids of the gateway and the processor. */
  pids: [number, number]
  /** ns of CPU spent during this build's batches: gateway main thread, gateway, processor main thread, processor. */
  cpuNs: number[]
  stop(): Promise<void>
}

/** ns a thread has run so far (Linux); 0 where /proc has no schedstat. */
async function threadNs(pid: number, tid: number | string): Promise<number> {
  try {
    return Number((await readFile(`/proc/${pid}/task/${tid}/schedstat`, 'utf8')).split(' ')[0])
  } catch {
    return 0
  }
}

/** ns a process's main thread and all its threads have run so far. */
async function cpuNs(pid: number): Promise<[number, number]> {
  const tids = await readdir(`/proc/${pid}/task`).catch(() => [])
  const all = await Promise.all(tids.map((tid) => threadNs(pid, tid)))
  return [await threadNs(pid, pid), all.reduce((a, b) => a + b, 0)]
}

/** One request to a build's mesh: ms to the end, or with --stream to the first byte of the body. */
async function post(mesh: Mesh): Promise<number> {
  const headers = { Authorization: `Bearer ${mesh.apiKey}` }
  const r = await timedPost(mesh.agent, mesh.url, PATH, BODY, headers, mesh.checkout)
  if (STREAM && r.firstMs === 0) throw new Error(`${mesh.checkout}: a stream with no body`)
  return STREAM ? r.firstMs : r.totalMs
}

const dir = await mkdtemp(join(tmpdir(), 'llm-mesh-compare-'))
const testnet = await createTestnet(3, { host: '127.0.0.1' })
const bootstrap = testnet.bootstrap.map((b) => `${b.host}:${b.port}`).join(',')
/** With --ollama: the Ollama-protocol server both builds' processors call, in its own process. */
async function startOllamaServer(): Promise<{ child: ChildProcess; url: string }> {
  const script = fileURLToPath(new URL('./ollama-protocol-server.js', import.meta.url))
  const child = spawn(process.execPath, [script], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  return new Promise((resolve, reject) => {
    child.on('message', (m: { type?: string; url?: string }) => {
      if (m?.type === 'ready' && m.url) resolve({ child, url: m.url })
    })
    child.once('exit', (code) => reject(new Error(`ollama-protocol-server exited with ${code}`)))
  })
}
const ollama = values.ollama ? await startOllamaServer() : null

const meshes: Mesh[] = []
for (const [i, checkout] of positionals.entries()) {
  const lib = (await import(pathToFileURL(join(resolve(checkout), 'dist/bench/lib.js')).href)) as BenchLib
  // Each build's workers on a mesh of their own: neither gateway routes to the other's processor.
  process.env.LLM_MESH_MESH = `compare-${i}`
  const { gateway, apiKey } = await lib.spawnAccountedGateway(
    bootstrap,
    join(dir, `gw-${i}`),
    deepMerge({ limits: { user: UNLIMITED }, http: { enabled: true, port: 0 } }, GATEWAY_CONFIG[i] ?? {}),
  )
  const store = join(dir, `proc-${i}`)
  const processor = ollama
    ? await lib.spawnWorker(
        ['processor', '--bootstrap', bootstrap, '--store', store, '--backend', 'ollama'].concat([
          '--ollama-host',
          ollama.url,
          '--parallel',
          '64',
        ]),
      )
    : await lib.spawnEchoProcessor(bootstrap, store)
  meshes.push({
    checkout,
    url: new URL(gateway.httpUrl ?? ''),
    apiKey,
    agent: new Agent({ keepAlive: true, maxSockets: 1 }),
    times: [],
    pids: [gateway.child.pid ?? 0, processor.child.pid ?? 0],
    cpuNs: [0, 0, 0, 0],
    stop: async () => {
      await gateway.stop()
      await processor.stop()
    },
  })
}

// Wait until each gateway routes to its processor, then warm both up.
for (const mesh of meshes) {
  await untilItAnswers(() => post(mesh))
  for (let i = 0; i < 3000; i++) await post(mesh)
}

/** Turns of wrk at `connections`, alternating between the builds (the order flips each turn). */
async function compareWithWrk(connections: number): Promise<void> {
  const turns = Number(values.turns)
  const seconds = Number(values.seconds)
  const rps: number[][] = meshes.map(() => [])
  const cpu: number[][] = meshes.map(() => [])
  const procCpu: number[][] = meshes.map(() => [])
  const p50: number[][] = meshes.map(() => [])
  const p99: number[][] = meshes.map(() => [])
  const load = async (i: number) => {
    const mesh = meshes[i] as Mesh
    const [before] = await cpuNs(mesh.pids[0])
    const [procBefore] = await cpuNs(mesh.pids[1])
    const headers = { Authorization: `Bearer ${mesh.apiKey}` }
    const run = await runWrk(mesh.checkout, dir, mesh.url, PATH, BODY, headers, connections, seconds)
    const [after] = await cpuNs(mesh.pids[0])
    const [procAfter] = await cpuNs(mesh.pids[1])
    if (!run) throw new Error('wrk is not installed (apt-get install wrk)')
    rps[i]?.push(run.rps)
    cpu[i]?.push((after - before) / 1000 / run.requests)
    procCpu[i]?.push((procAfter - procBefore) / 1000 / run.requests)
    p50[i]?.push(run.p50)
    p99[i]?.push(run.p99)
  }
  // One turn each first, not counted: the first seconds at C connections open the
  // processor's sockets to its backend and warm up code the sequential warm-up did not.
  for (const mesh of meshes) {
    const headers = { Authorization: `Bearer ${mesh.apiKey}` }
    await runWrk(mesh.checkout, dir, mesh.url, PATH, BODY, headers, connections, 1)
  }
  for (let turn = 0; turn < turns; turn++) {
    if (values.together) await Promise.all([load(0), load(1)])
    else for (const i of turn % 2 ? [1, 0] : [0, 1]) await load(i)
  }
  console.log(
    `POST ${PATH}, non-streamed${ollama ? ', Ollama backend' : ''}, wrk at ${connections} connections, ${turns} turns of ${seconds} s per build${values.together ? ', both builds at once' : ''}`,
  )
  console.log(
    '| checkout | req/s, median of turns | gateway / processor main-thread CPU µs/request, medians | p50 / p99 ms, medians |',
  )
  console.log('|---|---|---|---|')
  for (const [i, mesh] of meshes.entries()) {
    console.log(
      `| ${mesh.checkout} ${i ? 'B' : 'A'} | ${fmt(median(rps[i] ?? []), 0)} | ${fmt(median(cpu[i] ?? []), 1)} / ${fmt(median(procCpu[i] ?? []), 1)} | ${fmt(median(p50[i] ?? []))} / ${fmt(median(p99[i] ?? []))} |`,
    )
  }
  const ratios = (rps[1] ?? []).map((r, k) => r / (rps[0]?.[k] ?? Number.NaN))
  const ratioOf = (xs: number[][]) => (xs[1] ?? []).map((x, k) => x / (xs[0]?.[k] ?? Number.NaN))
  const show = (rs: number[]) => `${rs.map((r) => fmt(r, 2)).join(' ')} (median ${fmt(median(rs), 3)})`
  console.log(
    `B / A per turn pair: req/s ${show(ratios)}; gateway CPU/request ${show(ratioOf(cpu))}; processor CPU/request ${show(ratioOf(procCpu))}`,
  )
}

/** Sequential requests, the builds taking turns in batches of --batch (the default mode). */
async function compareSequential(): Promise<void> {
  for (let done = 0; done < REQUESTS; done += BATCH) {
    for (const mesh of meshes) {
      const before = (await Promise.all(mesh.pids.map(cpuNs))).flat()
      for (let i = 0; i < BATCH; i++) mesh.times.push(await post(mesh))
      const after = (await Promise.all(mesh.pids.map(cpuNs))).flat()
      for (const k of [0, 1, 2, 3]) mesh.cpuNs[k] = (mesh.cpuNs[k] ?? 0) + (after[k] ?? 0) - (before[k] ?? 0)
    }
  }

  console.log(
    `POST ${PATH}${ollama ? ' (Ollama backend)' : ''}, ${STREAM ? 'streamed (time to the first byte)' : 'non-streamed'}, ${REQUESTS} sequential per build in alternating batches of ${BATCH}`,
  )
  console.log(
    '| checkout | p50 ms | p99 ms | p50 per fifth of the run, ms | gateway CPU µs/request, main thread / all | processor CPU µs/request, main thread / all |',
  )
  console.log('|---|---|---|---|---|---|')
  function perRequest(mesh: Mesh, k: number): string {
    return fmt((mesh.cpuNs[k] ?? 0) / 1000 / mesh.times.length, 0)
  }
  for (const mesh of meshes) {
    const fifth = Math.floor(mesh.times.length / 5)
    const fifths = [0, 1, 2, 3, 4].map((k) => fmt(median(mesh.times.slice(k * fifth, (k + 1) * fifth))))
    const sorted = [...mesh.times].sort((a, b) => a - b)
    console.log(
      `| ${mesh.checkout} | ${fmt(percentile(sorted, 50))} | ${fmt(percentile(sorted, 99))} | ${fifths.join(' ')} | ${perRequest(mesh, 0)} / ${perRequest(mesh, 1)} | ${perRequest(mesh, 2)} / ${perRequest(mesh, 3)} |`,
    )
  }
}

if (WRK_CONNECTIONS !== null) await compareWithWrk(WRK_CONNECTIONS)
else await compareSequential()

for (const mesh of meshes) await mesh.stop()
if (ollama) {
  const exited = new Promise((r) => ollama.child.once('exit', r))
  ollama.child.kill('SIGTERM')
  await exited
}
await testnet.destroy()
await rm(dir, { recursive: true, force: true })
