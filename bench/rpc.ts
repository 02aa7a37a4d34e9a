/**
 * RPC round trip on loopback, across processes: a tiny `ping` from a client to
 * a gateway running as its own process, through llm-mesh's net layer, against
 * the baseline of raw @hyperswarm/rpc to an echo server in another process.
 *
 *   npm run build && node dist/bench/rpc.js [--requests 5000]
 */
import { spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import RPC from '@hyperswarm/rpc'
import createTestnet from 'hyperdht/testnet.js'
import { MeshClient } from '../workers/client/client.worker.js'
import { fmt, percentile, spawnWorker } from './lib.js'

const { values } = parseArgs({ options: { requests: { type: 'string', default: '5000' } } })
const REQUESTS = Number(values.requests)
const CONCURRENCY = 64

const ECHO_SERVER = `
import RPC from '@hyperswarm/rpc'
import DHT from 'hyperdht'
const dht = new DHT({ bootstrap: JSON.parse(process.env.BOOTSTRAP), host: '127.0.0.1', firewalled: false })
const rpc = new RPC({ dht })
const server = rpc.createServer()
server.respond('echo', (req) => req)
await server.listen()
process.send(server.publicKey.toString('hex'))
process.on('disconnect', () => process.exit(0))
`

async function measure(call: () => Promise<unknown>): Promise<{ p50: number; p99: number; rps: number }> {
  for (let i = 0; i < 200; i++) await call()
  const times: number[] = []
  for (let i = 0; i < REQUESTS; i++) {
    const t0 = process.hrtime.bigint()
    await call()
    times.push(Number(process.hrtime.bigint() - t0) / 1e6)
  }
  times.sort((a, b) => a - b)
  let done = 0
  const t0 = performance.now()
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (done < REQUESTS) {
        done++
        await call()
      }
    }),
  )
  const rps = REQUESTS / ((performance.now() - t0) / 1000)
  return { p50: percentile(times, 50), p99: percentile(times, 99), rps }
}

const testnet = await createTestnet(3, { host: '127.0.0.1' })
const bootstrap = testnet.bootstrap.map((b) => `${b.host}:${b.port}`)

const echo = spawn(process.execPath, ['--input-type=module', '-e', ECHO_SERVER], {
  env: { ...process.env, BOOTSTRAP: JSON.stringify(testnet.bootstrap) },
  stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
})
const echoKey = await new Promise<string>((resolve) => echo.once('message', (m) => resolve(String(m))))
const raw = new RPC({ dht: testnet.createNode() })
const rawConn = raw.connect(Buffer.from(echoKey, 'hex'))
const payload = Buffer.from('null')
const baseline = await measure(() => rawConn.request('echo', payload))

const store = await mkdtemp(join(tmpdir(), 'llm-mesh-bench-'))
const gateway = await spawnWorker(['gateway', '--bootstrap', bootstrap.join(','), '--store', store])
const client = new MeshClient({ config: { bootstrap, gateway: gateway.publicKey, log: { level: 'warn' } } })
await client.ready()
const peer = await client.connectGateway()
const mesh = await measure(() => peer.request('ping', null))

console.log(
  `RPC round trip, tiny request, loopback, cross-process, ${REQUESTS} sequential + ${REQUESTS} at ${CONCURRENCY} in flight`,
)
console.log('| path | p50 ms | p99 ms | req/s at 64 in flight |')
console.log('|---|---|---|---|')
console.log(
  `| raw @hyperswarm/rpc echo (baseline) | ${fmt(baseline.p50)} | ${fmt(baseline.p99)} | ${fmt(baseline.rps, 0)} |`,
)
console.log(
  `| llm-mesh ping (client → gateway) | ${fmt(mesh.p50)} | ${fmt(mesh.p99)} | ${fmt(mesh.rps, 0)} |`,
)
console.log(
  `ratio llm-mesh/raw: p50 ${fmt(mesh.p50 / baseline.p50, 2)}x, throughput ${fmt(mesh.rps / baseline.rps, 2)}x`,
)

await client.close()
await gateway.stop()
rawConn.destroy()
await raw.destroy()
echo.kill()
await testnet.destroy()
await rm(store, { recursive: true, force: true })
