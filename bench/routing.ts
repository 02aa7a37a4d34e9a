/**
 * Routing strategies on an unequal mesh: three processors with the instant
 * echo backend paced to 400, 200 and 100 tokens/s per generation (capacity 2
 * each; weights 4, 2, 1 for random-weighted), one gateway per strategy (only
 * one under load at a time). Each answer is 40 tokens, so the ideal
 * throughput — every slot busy all the time — is
 * Σ capacity × tokens/s / 40 = 2 × (400 + 200 + 100) / 40 = 35 answers/s.
 *
 * Two loads, closed loop: half the capacity in flight (3: the strategy has a
 * choice of free slots) and all of it (6). Rounds rotate through the
 * strategies, so the machine's drift hits them alike; medians of `--rounds`.
 *
 *   npm run build && node dist/bench/routing.js [--requests 120] [--rounds 2]
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import createTestnet from 'hyperdht/testnet.js'
import { STRATEGIES, type StrategyName } from '../facilities/router/strategies.js'
import { MeshClient } from '../workers/client/client.worker.js'
import { fmt, median, percentile, spawnEchoProcessor, spawnWorker } from './lib.js'

const { values } = parseArgs({
  options: { requests: { type: 'string', default: '120' }, rounds: { type: 'string', default: '2' } },
})
const REQUESTS = Number(values.requests)
const ROUNDS = Number(values.rounds)
const TOKENS = 40
const PROMPT = Array.from({ length: TOKENS }, (_, i) => `w${i % 10}`).join(' ')
const PROCESSORS = [
  { tps: 400, weight: 4 },
  { tps: 200, weight: 2 },
  { tps: 100, weight: 1 },
]
const CAPACITY = 2
const IDEAL = PROCESSORS.reduce((n, p) => n + (CAPACITY * p.tps) / TOKENS, 0)
const LOADS = [(CAPACITY * PROCESSORS.length) / 2, CAPACITY * PROCESSORS.length]

const dir = await mkdtemp(join(tmpdir(), 'llm-mesh-bench-'))
const testnet = await createTestnet(3, { host: '127.0.0.1' })
const bootstrap = testnet.bootstrap.map((b) => `${b.host}:${b.port}`).join(',')

const gateways = new Map<StrategyName, { stop(): Promise<void>; client: MeshClient }>()
for (const strategy of STRATEGIES) {
  const conf = join(dir, strategy)
  await mkdir(conf, { recursive: true })
  await writeFile(
    join(conf, 'gateway.json'),
    JSON.stringify({ auth: { enabled: false }, routing: { strategy } }),
  )
  const gw = await spawnWorker([
    'gateway',
    '--bootstrap',
    bootstrap,
    '--store',
    join(conf, 'store'),
    '--config',
    join(conf, 'gateway.json'),
  ])
  const client = new MeshClient({
    config: { bootstrap: bootstrap.split(','), gateway: gw.publicKey, log: { level: 'warn' } },
  })
  await client.ready()
  gateways.set(strategy, { stop: gw.stop, client })
}
const processors = await Promise.all(
  PROCESSORS.map((p, i) =>
    spawnEchoProcessor(bootstrap, join(dir, `proc-${i}`), {
      parallel: CAPACITY,
      tps: p.tps,
      weight: p.weight,
    }),
  ),
)
for (const { client } of gateways.values()) {
  while ((await client.status()).processors.length < PROCESSORS.length) {
    await new Promise((r) => setTimeout(r, 100))
  }
}

interface Round {
  rps: number
  p50: number
  p99: number
  /** Share of answers per processor, fastest first. */
  shares: number[]
}

async function round(client: MeshClient, concurrency: number): Promise<Round> {
  let next = 0
  const times: number[] = []
  const served = new Map<string, number>()
  const t0 = performance.now()
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < REQUESTS) {
        next++
        const s = performance.now()
        const r = await client.generate({ model: 'echo', prompt: PROMPT })
        times.push(performance.now() - s)
        served.set(r.processor ?? '', (served.get(r.processor ?? '') ?? 0) + 1)
      }
    }),
  )
  const secs = (performance.now() - t0) / 1000
  times.sort((a, b) => a - b)
  return {
    rps: REQUESTS / secs,
    p50: percentile(times, 50),
    p99: percentile(times, 99),
    shares: processors.map((p) => (served.get(p.publicKey) ?? 0) / REQUESTS),
  }
}

// Warm up every gateway (measurements for 'fastest', connections for all).
for (const { client } of gateways.values()) await round(client, CAPACITY * PROCESSORS.length)

const results = new Map<string, Round[]>()
for (let r = 0; r < ROUNDS; r++) {
  for (const concurrency of LOADS) {
    const order = [...STRATEGIES.slice(r % STRATEGIES.length), ...STRATEGIES.slice(0, r % STRATEGIES.length)]
    for (const strategy of order) {
      const key = `${strategy}@${concurrency}`
      const list = results.get(key) ?? []
      list.push(await round((gateways.get(strategy) as { client: MeshClient }).client, concurrency))
      results.set(key, list)
    }
  }
}

console.log(
  `Routing on an unequal mesh: echo processors paced to ${PROCESSORS.map((p) => p.tps).join('/')} tokens/s, capacity ${CAPACITY} each, ${TOKENS}-token answers; ideal ${fmt(IDEAL, 1)} answers/s; ${REQUESTS} requests per round, median of ${ROUNDS}`,
)
console.log('| in flight | strategy | answers/s | ratio to ideal | p50 ms | p99 ms | share fast/mid/slow |')
console.log('|---|---|---|---|---|---|---|')
for (const concurrency of LOADS) {
  for (const strategy of STRATEGIES) {
    const rs = results.get(`${strategy}@${concurrency}`) ?? []
    const rps = median(rs.map((x) => x.rps))
    const shares = PROCESSORS.map((_, i) => median(rs.map((x) => x.shares[i] ?? 0)))
    console.log(
      `| ${concurrency} | ${strategy} | ${fmt(rps, 1)} | ${fmt(rps / IDEAL, 3)} | ${fmt(median(rs.map((x) => x.p50)), 0)} | ${fmt(median(rs.map((x) => x.p99)), 0)} | ${shares.map((s) => fmt(s, 2)).join(' / ')} |`,
    )
  }
}

for (const { client, stop } of gateways.values()) {
  await client.close()
  await stop()
}
for (const p of processors) await p.stop()
await testnet.destroy()
await rm(dir, { recursive: true, force: true })
