/**
 * Copy throughput of a model file between two processes on loopback, each
 * with its own Corestore and ModelBlobStore (as two processors would be),
 * against a plain TCP stream of the same file between two processes in the
 * same run (issue 20: target store / TCP ≥ 0.5 for a ≥ 200 MB file).
 *
 *   npm run build && node dist/bench/model-copy.js [--runs 5] [--mb 256] [--block-size BYTES[,BYTES…]]
 *     [--prof sender|receiver|both] [--only raw,tcp,dht,store]
 *
 * Writes a file of incompressible bytes named *.gguf (the store copies bytes,
 * whatever they mean), then, for each run, in this order:
 * - raw TCP: the file streamed over a loopback TCP connection to a process
 *   that only counts the bytes (the pipe's own ceiling);
 * - TCP: the same, the receiver writing to `<dest>.partial` and hashing it
 *   with sha256 as it arrives, then renaming it in place (what the store's
 *   fetch does to the bytes, with no verification or replication): the baseline;
 * - store: a new sender process publishes the file into its core (timed on
 *   its own: a processor pays this once per file), serves over HyperDHT on a
 *   loopback testnet (serveModels), and a new receiver process connects
 *   (connectModels) and fetches; timed from the connect to the verified file
 *   renamed in place (bench/model-copy-peer.ts).
 * Baseline and store take turns in every run, so this VM's speed drift (up to
 * 2x within seconds) hits both alike: the ratio is taken per run, and the
 * bench prints min/median/max MB/s (10^6 bytes/s) of each and the range of
 * the per-run ratios. `--prof sender|receiver` writes a V8 CPU profile of that
 * side of each store run to bench/out. Temp dirs are removed at the end.
 */
import { randomFillSync } from 'node:crypto'
import { mkdtemp, open, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import createTestnet from 'hyperdht/testnet.js'
import { type Peer, startPeer, stopPeer, tcpCopy } from './copy-peers.js'
import { fmt, median } from './lib.js'

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    mb: { type: 'string', default: '256' },
    'block-size': { type: 'string' },
    prof: { type: 'string' },
    only: { type: 'string' },
  },
})
const RUNS = Number(values.runs)
const SIZE = Number(values.mb) * 1024 * 1024
async function makeFile(path: string): Promise<void> {
  const fh = await open(path, 'w')
  const chunk = Buffer.allocUnsafe(4 * 1024 * 1024)
  try {
    for (let written = 0; written < SIZE; written += chunk.length) {
      randomFillSync(chunk)
      await fh.write(chunk, 0, Math.min(chunk.length, SIZE - written))
    }
  } finally {
    await fh.close()
  }
}

/** The file over one HyperDHT connection (Noise over UDX), only counted: the store's transport alone. */
async function dhtRun(file: string, work: string, bootstrap: string, run: number): Promise<number> {
  const dirs = [join(work, `dht-rx${run}`), join(work, `dht-tx${run}`)] as const
  const rx = startPeer('dht-receiver', ['--dir', dirs[0], '--bootstrap', bootstrap])
  const { publicKey } = await rx.next<{ publicKey: string }>('listening')
  const tx = startPeer('dht-sender', [
    '--dir',
    dirs[1],
    '--bootstrap',
    bootstrap,
    '--server',
    publicKey,
    '--file',
    file,
  ])
  const done = await rx.next<{ ms: number; bytes: number; cpuMs: number }>('done')
  const sent = await tx.next<{ cpuMs: number }>('sent')
  dhtCpu.push((done.cpuMs + sent.cpuMs) / (SIZE / 1e6))
  await Promise.all([stopPeer(tx), stopPeer(rx)])
  if (done.bytes !== SIZE) throw new Error(`dht: got ${done.bytes} bytes of ${SIZE}`)
  await Promise.all(dirs.map((d) => rm(d, { recursive: true })))
  return done.ms
}

/** One store copy: a new sender publishes and serves, a new receiver fetches. */
async function storeRun(
  file: string,
  work: string,
  bootstrap: string,
  run: number,
  blockSize: string,
): Promise<{ publishMs: number; copyMs: number; senderCpuMs: number; receiverCpuMs: number }> {
  const bs = blockSize ? ['--block-size', blockSize] : []
  const tx = startPeer(
    'store-sender',
    ['--dir', join(work, `tx${run}`), '--bootstrap', bootstrap, '--file', file, ...bs],
    values.prof === 'sender' || values.prof === 'both',
  )
  const ready = await tx.next<{ manifest: { sha256: string }; publicKey: string; publishMs: number }>('ready')
  const cpuBefore = await senderCpu(tx)
  const dest = join(work, `store-${run}.gguf`)
  const rx = startPeer(
    'store-receiver',
    [
      '--dir',
      join(work, `rx${run}`),
      '--bootstrap',
      bootstrap,
      '--server',
      ready.publicKey,
      '--manifest',
      JSON.stringify(ready.manifest),
      '--dest',
      dest,
    ],
    values.prof === 'receiver' || values.prof === 'both',
  )
  const done = await rx.next<{ ms: number; sha256: string; wireBytes: number; cpuMs: number }>('done')
  const senderCpuMs = (await senderCpu(tx)) - cpuBefore
  await stopPeer(rx)
  await stopPeer(tx)
  if (done.sha256 !== ready.manifest.sha256) throw new Error('store: digest mismatch')
  if (done.wireBytes !== SIZE) throw new Error(`store: ${done.wireBytes} bytes over the wire of ${SIZE}`)
  await Promise.all([
    rm(dest),
    rm(join(work, `tx${run}`), { recursive: true }),
    rm(join(work, `rx${run}`), { recursive: true }),
  ])
  return { publishMs: ready.publishMs, copyMs: done.ms, senderCpuMs, receiverCpuMs: done.cpuMs }
}

/** The sender's CPU time so far (user + system, ms). */
async function senderCpu(tx: Peer): Promise<number> {
  tx.child.send({ type: 'cpu?' })
  return (await tx.next<{ cpuMs: number }>('cpu')).cpuMs
}

/** CPU ms per MB of the HyperDHT stream runs, both sides. */
const dhtCpu: number[] = []

const mbps = (ms: number) => SIZE / 1e6 / (ms / 1000)

function line(label: string, xs: number[], digits = 1): string {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  const [lo, mid, hi] = [s[0] ?? Number.NaN, median(s), s[s.length - 1] ?? Number.NaN]
  return `${label.padEnd(34)} min ${fmt(lo, digits)}  median ${fmt(mid, digits)}  max ${fmt(hi, digits)}`
}

async function main(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'model-copy-'))
  const net = await createTestnet(3, { host: '127.0.0.1' })
  try {
    const node = net.bootstrap[0] as { host: string; port: number }
    const bootstrap = `${node.host}:${node.port}`
    const file = join(work, 'model.gguf')
    await makeFile(file)
    const only = new Set((values.only ?? 'raw,tcp,dht,store').split(','))
    const sizes = only.has('store') ? (values['block-size'] ?? '').split(',') : []
    const kinds = new Map<string, (run: number) => Promise<number>>()
    if (only.has('raw')) kinds.set('raw TCP', (run) => tcpCopy(file, join(work, `tcp${run}.gguf`), true))
    if (only.has('tcp'))
      kinds.set('TCP+disk+sha256', (run) => tcpCopy(file, join(work, `tcp${run}.gguf`), false))
    if (only.has('dht')) kinds.set('HyperDHT stream', (run) => dhtRun(file, work, bootstrap, run))
    const publish = new Map<string, number[]>()
    const cpu = new Map<string, number[]>()
    const cpuRx = new Map<string, number[]>()
    for (const bs of sizes) {
      const kind = `store${bs ? ` ${Number(bs) / 1024} KiB` : ''}`
      publish.set(kind, [])
      cpu.set(kind, [])
      cpuRx.set(kind, [])
      kinds.set(kind, async (run) => {
        const r = await storeRun(file, work, bootstrap, run, bs)
        publish.get(kind)?.push(mbps(r.publishMs))
        cpu.get(kind)?.push((r.senderCpuMs + r.receiverCpuMs) / (SIZE / 1e6))
        cpuRx.get(kind)?.push(r.receiverCpuMs / (SIZE / 1e6))
        return r.copyMs
      })
    }
    const figures = new Map([...kinds.keys()].map((k) => [k, [] as number[]]))
    const ratios = new Map([...publish.keys()].map((k) => [k, [] as number[]]))
    const dhtRatios = new Map([...publish.keys()].map((k) => [k, [] as number[]]))
    console.log(`file ${fmt(SIZE / 1e6, 1)} MB, ${RUNS} runs (MB/s = 10^6 bytes/s)`)
    for (let run = 0; run < RUNS; run++) {
      const got = new Map<string, number>()
      for (const [kind, once] of kinds) got.set(kind, mbps(await once(run)))
      for (const [kind, v] of got) figures.get(kind)?.push(v)
      for (const [kind, r] of ratios)
        r.push((got.get(kind) ?? Number.NaN) / (got.get('TCP+disk+sha256') ?? Number.NaN))
      for (const [kind, r] of dhtRatios)
        r.push((got.get(kind) ?? Number.NaN) / (got.get('HyperDHT stream') ?? Number.NaN))
      console.log(`run ${run + 1}: ${[...got].map(([k, v]) => `${k} ${fmt(v, 1)}`).join(', ')} MB/s`)
    }
    for (const [kind, xs] of figures) console.log(line(`${kind} MB/s`, xs))
    for (const [kind, xs] of ratios) console.log(line(`${kind} / TCP+disk+sha256`, xs, 2))
    for (const [kind, xs] of dhtRatios) console.log(line(`${kind} / HyperDHT stream`, xs, 2))
    for (const [kind, xs] of publish) console.log(line(`${kind} publish MB/s`, xs))
    for (const [kind, xs] of cpu) console.log(line(`${kind} CPU ms/MB (both sides)`, xs, 2))
    for (const [kind, xs] of cpuRx) console.log(line(`${kind} CPU ms/MB (receiver)`, xs, 2))
    if (dhtCpu.length > 0) console.log(line('HyperDHT stream CPU ms/MB (both)', dhtCpu, 2))
  } finally {
    await net.destroy()
    await rm(work, { recursive: true, force: true })
  }
}

await main()
