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
import { readFileSync } from 'node:fs'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import createTestnet from 'hyperdht/testnet.js'
import { LogFacility } from '../facilities/log.facility.js'
import { StoreFacility } from '../facilities/store.facility.js'
import { UsageFacility } from '../facilities/usage/usage.facility.js'
import { MeshClient } from '../workers/client/client.worker.js'
import {
  fmt,
  median,
  percentile,
  spawnAccountedGateway,
  spawnEchoProcessor,
  spawnWorker,
  UNLIMITED,
} from './lib.js'

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
const { gateway: accounted, apiKey } = await spawnAccountedGateway(bootstrap, join(dir, 'gw-auth'), {
  limits: { user: UNLIMITED },
})
const open = await spawnWorker([
  'gateway',
  '--bootstrap',
  bootstrap,
  '--store',
  join(dir, 'gw-open'),
  '--config',
  await configFile('open', { auth: { enabled: false } }),
])

// After the gateways: a processor serves only gateways it knows (its firewall).
const processor = await spawnEchoProcessor(bootstrap, join(dir, 'proc'))

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
  /** CPU µs per request: the gateway under test, the processor, this process (the client). */
  gatewayUs: number
  processorUs: number
  clientUs: number
}

/** CPU ms a process used so far (Linux /proc; NaN elsewhere). */
function cpuMs(pid: number | undefined): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? []
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100
  } catch {
    return Number.NaN
  }
}

async function round(c: MeshClient, gatewayPid: number | undefined): Promise<Round> {
  const before = { gw: cpuMs(gatewayPid), proc: cpuMs(processor.child.pid), self: process.cpuUsage() }
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
  const self = process.cpuUsage(before.self)
  const perRequest = (ms: number) => (ms * 1000) / REQUESTS
  return {
    rps: REQUESTS / secs,
    p50: percentile(times, 50),
    p99: percentile(times, 99),
    gatewayUs: perRequest(cpuMs(gatewayPid) - before.gw),
    processorUs: perRequest(cpuMs(processor.child.pid) - before.proc),
    clientUs: (self.user + self.system) / REQUESTS,
  }
}

const openClient = await client(open.publicKey)
const authClient = new MeshClient({
  config: { bootstrap: bootstrap.split(','), gateway: accounted.publicKey, log: { level: 'warn' } },
  apiKey,
})
await authClient.ready()
while ((await authClient.status()).processors.length === 0) await new Promise((r) => setTimeout(r, 100))

// Warm both paths, then alternate rounds so drift hits both alike.
const pids = { open: open.child.pid, auth: accounted.child.pid }
await round(openClient, pids.open)
await round(authClient, pids.auth)
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
  for (const [name, c] of order) results[name].push(await round(c, pids[name]))
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
console.log('| path | req/s | p50 ms | p99 ms | CPU µs/req: gateway | processor | client |')
console.log('|---|---|---|---|---|---|---|')
for (const [label, rs] of [
  ['forwarding, auth disabled (baseline)', results.open],
  ['auth (API key) + limits + ledger', results.auth],
] as const) {
  console.log(
    `| ${label} | ${fmt(med(rs, 'rps'), 0)} | ${fmt(med(rs, 'p50'), 2)} | ${fmt(med(rs, 'p99'), 2)} | ${fmt(med(rs, 'gatewayUs'), 0)} | ${fmt(med(rs, 'processorUs'), 0)} | ${fmt(med(rs, 'clientUs'), 0)} |`,
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
