/**
 * Connect time across NAT, on the namespace test bed (test/helpers/netns.ts; needs root): a
 * public host runs `llm-mesh bootstrap --relay`; servers sit on a public host and behind a
 * consistent and a random NAT; dialers on a public host and behind a consistent and a random
 * NAT each open `--count` fresh connections to every server (the workers' NetFacility: DHT
 * lookup, handshake, hole-punch or relay, one RPC answered). Prints p50/p99/max per pair and
 * how many went through the relay; a pair hole-punching cannot connect shows its first dial's
 * failure, after which the dialer goes through the relay.
 *
 *   sudo node dist/bench/nat-connect.js [--count 20]
 */
import type { ChildProcess } from 'node:child_process'
import { parseArgs } from 'node:util'
import { BIN } from '../test/helpers/mesh.js'
import { NetBed, unavailable } from '../test/helpers/netns.js'
import { fmt, percentile } from './lib.js'
import type { DialResult } from './nat-peer.js'

const { values } = parseArgs({ options: { count: { type: 'string', default: '20' } } })
const count = Number(values.count)
const why = unavailable()
if (why) {
  console.error(`nat-connect: ${why}`)
  process.exit(2)
}
const PEER = new URL('./nat-peer.js', import.meta.url).pathname
const KINDS = [
  ['public', undefined],
  ['consistent', 'consistent'],
  ['random', 'random'],
] as const

const bed = NetBed.create([
  { name: 'boot' },
  ...KINDS.map(([kind, nat]) => ({ name: `s${kind.slice(0, 3)}`, ...(nat ? { nat } : {}) })),
  ...KINDS.map(([kind, nat]) => ({ name: `d${kind.slice(0, 3)}`, ...(nat ? { nat } : {}) })),
])
process.on('SIGINT', () => {
  bed.destroy()
  process.exit(130)
})

function readyOf(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    child.on(
      'message',
      (m: { type?: string; publicKey?: string }) => m?.type === 'ready' && resolve(m.publicKey ?? ''),
    )
    child.once('exit', (code) => reject(new Error(`peer exited with ${code}`)))
  })
}

/** A node process in `host` (fork's IPC through `ip netns exec`). */
function inHost(host: string, args: string[]): ChildProcess {
  return bed.spawn(host, process.execPath, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
}

try {
  const boot = bed.spawn(
    'boot',
    process.execPath,
    [BIN, 'bootstrap', '--host', bed.host('boot').ip, '--relay', '--data', `/tmp/nat-bench-${process.pid}`],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  )
  const relay = await new Promise<string>((resolve) => {
    let out = ''
    boot.stdout?.on('data', (d: Buffer) => {
      out += d
      const key = /relay ([0-9a-f]{64})/.exec(out)?.[1]
      if (key && out.includes('bootstrap ready')) resolve(key)
    })
  })
  const bootstrap = `${bed.host('boot').ip}:49737`
  const servers = new Map<string, string>()
  for (const [kind] of KINDS)
    servers.set(await readyOf(inHost(`s${kind.slice(0, 3)}`, [PEER, 'serve', bootstrap, relay])), kind)
  await new Promise((r) => setTimeout(r, 2_000))
  console.log(
    `fresh connections per pair: ${count}; relay on the bootstrap host; ms from dial to the first RPC answer`,
  )
  console.log('dialer      → server       p50      p99      max   relayed  failed (first failure)')
  for (const [kind] of KINDS) {
    const dialer = inHost(`d${kind.slice(0, 3)}`, [PEER, 'dial', bootstrap, relay])
    await readyOf(dialer)
    const results = await new Promise<DialResult[]>((resolve) => {
      dialer.on(
        'message',
        (m: { type?: string; results?: DialResult[] }) => m?.type === 'results' && resolve(m.results ?? []),
      )
      dialer.send({ keys: [...servers.keys()], count })
    })
    for (const [key, server] of servers) {
      const mine = results.filter((r) => r.key === key)
      const ok = mine.flatMap((r) => (r.ms === null ? [] : [r.ms])).sort((a, b) => a - b)
      const failed = mine.filter((r) => r.ms === null)
      const relayed = mine.filter((r) => r.relayed && r.ms !== null).length
      const cells = ok.length
        ? [percentile(ok, 50), percentile(ok, 99), Math.max(...ok)].map((x) => fmt(x, 0).padStart(8))
        : ['       -', '       -', '       -']
      console.log(
        `${kind.padEnd(11)} → ${server.padEnd(11)} ${cells.join(' ')}  ${String(relayed).padStart(7)}  ${failed.length}${failed[0] ? ` (${failed[0].code})` : ''}`,
      )
    }
    dialer.kill()
  }
} finally {
  bed.destroy()
}
