/**
 * Routing at scale: the simulation of test/facilities/router/scale-sim.ts (the real registry,
 * discovery and scheduler over N stand-in processors, simulated time) at 10, 100 and 1,000
 * processors, idle and with a quarter of all slots busy, with the heartbeat design before issue
 * 17 (every processor polled for its full status every second) and now (versioned status: a
 * ~90-byte beat while nothing but load changed; idle processors beaten within
 * `beatBudgetPerSecond`). Prints the gateway's status messages and bytes per second and the
 * cost of a pick, as ranges over `--runs` seeds.
 *
 * Bytes on the wire: the sim counts JSON payloads; what the RPC framing, the encryption and UDX
 * add per message is measured here first on a real @hyperswarm/rpc connection over loopback
 * (UDX stream bytes sent and received, both ways, for `status` calls of each size).
 *
 *   npm run build && node dist/bench/routing-scale.js [--runs 3] [--seconds 20]
 */
import { parseArgs } from 'node:util'
import RPC from '@hyperswarm/rpc'
import createTestnet from 'hyperdht/testnet.js'
import { type SimResult, simulate } from '../test/facilities/router/scale-sim.js'
import { fmt } from './lib.js'

const { values } = parseArgs({
  options: { runs: { type: 'string', default: '3' }, seconds: { type: 'string', default: '20' } },
})
const RUNS = Number(values.runs)
const SECONDS = Number(values.seconds)

/** Mean bytes on the UDX stream (both directions) per message of a `status` call whose request and reply are `req` and `reply`. */
async function wireBytesPerMessage(req: Buffer, reply: Buffer, calls = 500): Promise<number> {
  const testnet = await createTestnet(3, { host: '127.0.0.1' })
  const server = new RPC({ dht: testnet.createNode() }).createServer()
  server.respond('status', () => reply)
  await server.listen()
  const rpc = new RPC({ dht: testnet.createNode() })
  const client = rpc.connect(server.publicKey)
  for (let i = 0; i < 20; i++) await client.request('status', req)
  // biome-ignore lint/suspicious/noExplicitAny: the raw UDX stream under @hyperswarm/rpc's client
  const raw = (client as any)._stream.rawStream as { bytesTransmitted: number; bytesReceived: number }
  const before = raw.bytesTransmitted + raw.bytesReceived
  for (let i = 0; i < calls; i++) await client.request('status', req)
  const bytes = raw.bytesTransmitted + raw.bytesReceived - before
  await rpc.destroy()
  await server.close()
  await testnet.destroy()
  return bytes / (2 * calls)
}

// What framing adds per message: a call with tiny payloads, and with a full status reply.
const tiny = await wireBytesPerMessage(Buffer.from('null'), Buffer.from('null'))
const overhead = tiny - 4
console.log(
  `UDX stream bytes per 'status' message with a 4-byte payload: ${fmt(tiny, 1)} (framing + encryption + UDX ≈ ${fmt(overhead, 1)} B a message)`,
)

interface Row {
  legacy: boolean
  n: number
  utilization: number
  results: SimResult[]
}

// Warm-up: a gateway runs for long; the first picks run unoptimised.
await simulate({ processors: 200, seconds: 3 })

const rows: Row[] = []
for (const n of [10, 100, 1_000]) {
  for (const utilization of [0, 0.25]) {
    for (const legacy of [true, false]) {
      const results: SimResult[] = []
      for (let run = 0; run < RUNS; run++) {
        results.push(await simulate({ processors: n, seconds: SECONDS, utilization, legacy, seed: run + 1 }))
      }
      rows.push({ legacy, n, utilization, results })
    }
  }
}

const range = (xs: number[], digits = 0) => {
  if (xs.some((x) => !Number.isFinite(x))) return '—'
  const lo = Math.min(...xs)
  const hi = Math.max(...xs)
  return fmt(lo, digits) === fmt(hi, digits) ? fmt(lo, digits) : `${fmt(lo, digits)}–${fmt(hi, digits)}`
}
const sample = rows.find((r) => !r.legacy)?.results[0] as SimResult
console.log(
  `Status payloads as encoded: full status ${sample.fullReplyBytes} B (6 models), beat ${sample.beatReplyBytes} B; ${SECONDS} s simulated, ${RUNS} seeds; ranges over the seeds`,
)
console.log(
  '| processors | busy slots | design | status msgs/s (peak s) | payload B/s | on the wire B/s | busy processors | pick p50 µs | pick p99 µs | cut → unreachable ms |',
)
console.log('|---|---|---|---|---|---|---|---|---|---|')
for (const { legacy, n, utilization, results: rs } of rows) {
  const msgs = rs.map((r) => r.messagesPerSecond)
  const wire = rs.map((r) => r.payloadBytesPerSecond + r.messagesPerSecond * overhead)
  const detection = rs.flatMap((r) => r.detectionMs)
  console.log(
    `| ${n} | ${utilization * 100}% | ${legacy ? 'before: poll all, full status' : 'now: versioned, budget 100/s'} | ${range(msgs)} (${range(rs.map((r) => r.peakMessagesPerSecond))}) | ${range(rs.map((r) => r.payloadBytesPerSecond))} | ${range(wire)} | ${range(rs.map((r) => r.busyProcessors))} | ${range(
      rs.map((r) => r.pickUs.p50),
      1,
    )} | ${range(
      rs.map((r) => r.pickUs.p99),
      1,
    )} | ${detection.length ? `${range(detection)} (bound ${rs[0]?.detectionBoundMs})` : '—'} |`,
  )
}
