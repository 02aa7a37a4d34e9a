/**
 * The gateway path with accounts against plain forwarding, in the same run:
 * one processor with the instant `echo` backend, two gateway processes that
 * both forward to it, one with auth + limits + ledger (an API key, default
 * limits lifted so nothing is refused) and one with `auth.enabled: false`.
 * A MeshClient in this process keeps `--concurrency` non-streamed requests in
 * flight against one gateway at a time, alternating rounds.
 *
 * Also: the usage ledger alone (UsageFacility in this process, records from
 * `--concurrency` writers at once): records/s and records per commit.
 *
 *   npm run build && node dist/bench/gateway.js [--requests 20000] [--concurrency 64] [--rounds 3]
 */
import { spawnSync } from 'node:child_process'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import createTestnet from 'hyperdht/testnet.js'
import { LogFacility } from '../facilities/log.facility.js'
import { StoreFacility } from '../facilities/store.facility.js'
import { UsageFacility } from '../facilities/usage.facility.js'
import { MeshClient } from '../workers/client.worker.js'
import { BIN, fmt, median, percentile, spawnWorker } from './lib.js'

const { values } = parseArgs({
  options: {
    requests: { type: 'string', default: '20000' },
    concurrency: { type: 'string', default: '64' },
    rounds: { type: 'string', default: '3' },
  },
})
const REQUESTS = Number(values.requests)
const CONCURRENCY = Number(values.concurrency)
const ROUNDS = Number(values.rounds)

const dir = await mkdtemp(join(tmpdir(), 'llm-mesh-bench-'))

async function configFile(name: string, config: object): Promise<string> {
  const folder = join(dir, `conf-${name}`)
  await mkdir(folder, { recursive: true })
  const path = join(folder, 'gateway.json')
  await writeFile(path, JSON.stringify(config))
  return path
}

const testnet = await createTestnet(3, { host: '127.0.0.1' })
const bootstrap = testnet.bootstrap.map((b) => `${b.host}:${b.port}`).join(',')
const processor = await spawnWorker([
  'processor',
  '--bootstrap',
  bootstrap,
  '--store',
  join(dir, 'proc'),
  '--backend',
  'echo',
  '--parallel',
  '64',
])
const unlimited = { rpm: null, tpm: null, dailyTokens: null, monthlyTokens: null }
const authConfig = await configFile('auth', { limits: { user: unlimited } })
// The accounted gateway's first admin, made offline on its store before it starts.
const made = spawnSync(
  process.execPath,
  [
    BIN,
    'user',
    'add',
    'bench',
    '--password',
    'bench-password',
    '--admin',
    '--store',
    join(dir, 'gw-auth'),
    '--config',
    authConfig,
  ],
  { encoding: 'utf8' },
)
if (made.status !== 0) throw new Error(`user add failed: ${made.stderr}`)
const accounted = await spawnWorker([
  'gateway',
  '--bootstrap',
  bootstrap,
  '--store',
  join(dir, 'gw-auth'),
  '--config',
  authConfig,
])
const open = await spawnWorker([
  'gateway',
  '--bootstrap',
  bootstrap,
  '--store',
  join(dir, 'gw-open'),
  '--config',
  await configFile('open', { auth: { enabled: false } }),
])

async function client(gateway: string): Promise<MeshClient> {
  const c = new MeshClient({ config: { bootstrap: bootstrap.split(','), gateway, log: { level: 'warn' } } })
  await c.ready()
  while ((await c.status()).processors.length === 0) await new Promise((r) => setTimeout(r, 100))
  return c
}

interface Round {
  rps: number
  p50: number
  p99: number
}

async function round(c: MeshClient): Promise<Round> {
  let next = 0
  const times: number[] = []
  const t0 = performance.now()
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < REQUESTS) {
        const i = next++
        const s = performance.now()
        await c.generate({ model: 'echo', prompt: `hello ${i}` })
        times.push(performance.now() - s)
      }
    }),
  )
  const secs = (performance.now() - t0) / 1000
  times.sort((a, b) => a - b)
  return { rps: REQUESTS / secs, p50: percentile(times, 50), p99: percentile(times, 99) }
}

const openClient = await client(open.publicKey)
const authClient = new MeshClient({
  config: { bootstrap: bootstrap.split(','), gateway: accounted.publicKey, log: { level: 'warn' } },
})
await authClient.ready()
await authClient.login('bench', 'bench-password')
const key = await authClient.createKey({ name: 'bench' })
authClient.useApiKey(key.key)
while ((await authClient.status()).processors.length === 0) await new Promise((r) => setTimeout(r, 100))

// Warm both paths, then alternate rounds so drift hits both alike.
await round(openClient)
await round(authClient)
const results: { open: Round[]; auth: Round[] } = { open: [], auth: [] }
for (let i = 0; i < ROUNDS; i++) {
  const order: Array<['open' | 'auth', MeshClient]> =
    i % 2 === 0
      ? [
          ['open', openClient],
          ['auth', authClient],
        ]
      : [
          ['auth', authClient],
          ['open', openClient],
        ]
  for (const [name, c] of order) results[name].push(await round(c))
}
const usage = await authClient.usage()

// The ledger alone.
const store = new StoreFacility({ dir: join(dir, 'ledger') })
await store.ready()
const ledger = new UsageFacility({ store, logger: new LogFacility({ level: 'warn' }).logger })
await ledger.ready()
const LEDGER_RECORDS = REQUESTS * 2
let written = 0
const l0 = performance.now()
await Promise.all(
  Array.from({ length: CONCURRENCY }, async (_, w) => {
    while (written < LEDGER_RECORDS) {
      const i = written++
      await ledger.record({
        id: `r${i}`,
        ts: Date.now(),
        userId: `user${w % 8}`,
        keyId: null,
        model: 'echo',
        processor: processor.publicKey,
        promptTokens: 12,
        completionTokens: 34,
        ms: 1.5,
        status: 'ok',
      })
    }
  }),
)
const ledgerSecs = (performance.now() - l0) / 1000
await ledger.indexed()
const commits = (await (await store.bee('usage')).get<{ commits: number }>('meta/ledger'))?.value.commits ?? 0

const med = (rs: Round[], k: keyof Round) => median(rs.map((r) => r[k]))
console.log(
  `Gateway path, instant echo backend, ${REQUESTS} non-streamed requests per round at ${CONCURRENCY} in flight, median of ${ROUNDS} alternating rounds`,
)
console.log('| path | req/s | p50 ms | p99 ms |')
console.log('|---|---|---|---|')
for (const [label, rs] of [
  ['forwarding, auth disabled (baseline)', results.open],
  ['auth (API key) + limits + ledger', results.auth],
] as const) {
  console.log(
    `| ${label} | ${fmt(med(rs, 'rps'), 0)} | ${fmt(med(rs, 'p50'), 2)} | ${fmt(med(rs, 'p99'), 2)} |`,
  )
}
console.log(`ratio accounted/forwarding: ${fmt(med(results.auth, 'rps') / med(results.open, 'rps'), 3)}`)
console.log(
  `ledger check: ${usage.month.requests} requests in the accounted gateway's ledger (sent: ${REQUESTS * (ROUNDS + 1)})`,
)
console.log(
  `ledger alone: ${fmt(LEDGER_RECORDS / ledgerSecs, 0)} records/s acknowledged (journaled), ${fmt(LEDGER_RECORDS / commits, 1)} records per journal block (${CONCURRENCY} writers, 8 users)`,
)

await ledger.close()
await store.close()
await openClient.close()
await authClient.close()
await open.stop()
await accounted.stop()
await processor.stop()
await testnet.destroy()
await rm(dir, { recursive: true, force: true })
