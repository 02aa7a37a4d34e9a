/**
 * One end of bench/nat-connect.ts, run inside a host of the namespace test bed: a NetFacility
 * (the workers' own DHT node, RPC and relay fallback) that either serves `ping` or dials peers
 * fresh, again and again, and reports how long each connection took to open and answer.
 *
 *   node dist/bench/nat-peer.js serve   BOOTSTRAP RELAYS   → IPC { type: 'ready', publicKey }
 *   node dist/bench/nat-peer.js dial    BOOTSTRAP RELAYS   ← IPC { keys, count } → { results }
 */
import DHT from 'hyperdht'
import { pino } from 'pino'
import { NetFacility } from '../facilities/net/net.facility.js'
import { MeshError } from '../kernel/errors.js'

const [role, bootstrapArg, relaysArg] = process.argv.slice(2)
const [host, port] = (bootstrapArg ?? '').split(':')
const net = new NetFacility({
  bootstrap: [{ host: host ?? '', port: Number(port) }],
  mesh: 'nat-bench',
  keyPair: DHT.keyPair(),
  relays: (relaysArg ?? '')
    .split(',')
    .filter(Boolean)
    .map((k) => Buffer.from(k, 'hex')),
  logger: pino({ level: 'silent' }),
})
await net.ready()
process.once('disconnect', () => {
  void net.close().finally(() => process.exit(0))
})

export interface DialResult {
  key: string
  ms: number | null
  relayed: boolean
  code?: string
}

/** A fresh connection to `key`: opened, one `ping` answered, closed. */
async function dialOnce(key: string): Promise<DialResult> {
  const started = performance.now()
  const conn = net.dial(Buffer.from(key, 'hex'))
  try {
    await conn.opened(15_000)
    await conn.request('ping', null, { timeout: 5_000 })
    return { key, ms: performance.now() - started, relayed: conn.relayed }
  } catch (err) {
    return {
      key,
      ms: null,
      relayed: conn.relayed,
      code: `${MeshError.from(err).code}: ${MeshError.from(err).reason}`,
    }
  } finally {
    conn.destroy()
  }
}

if (role === 'serve') {
  await net.serve({ ping: () => ({ pong: true }) })
  process.send?.({ type: 'ready', publicKey: net.publicKeyHex })
} else {
  process.on('message', async (msg: { keys: string[]; count: number }) => {
    const results: DialResult[] = []
    for (let i = 0; i < msg.count; i++) for (const key of msg.keys) results.push(await dialOnce(key))
    process.send?.({ type: 'results', results })
  })
  process.send?.({ type: 'ready', publicKey: net.publicKeyHex })
}
