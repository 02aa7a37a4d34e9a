/**
 * The time from an admin raising a model's `replicas` to the new copy serving
 * (issue 20), on the path operators run: a gateway process with accounts, a
 * processor process holding a `--mb` MB GGUF (the tiny model padded at the
 * end, which llama.cpp loads as it is), and, for each run, a new processor
 * process with an empty store. The admin's client asks `modelDesired
 * { replicas: 2, loaded: 2 }`; the gateway's reconcile loop copies the model
 * from the holder (publish, share, fetch: every block verified, the digest
 * checked) and loads it. Each run reports, from the ask:
 * - held: the inventory lists the new processor as a holder, with the
 *   holder's digest (the copy is verified, renamed in place and routable);
 * - loaded: the inventory shows it loaded there (warm: a request needs no load);
 * and the copy's share of it as MB/s (10^6 bytes/s) of the file over `held`.
 * The baseline, in every run just before the mesh copy: the same file over a
 * plain loopback TCP connection between two new processes, written to disk and
 * hashed with sha256 as it arrives (bench/copy-peers.ts `tcpCopy`); the ratio
 * held-rate / TCP-rate is taken per run, so this VM's speed drift hits both.
 * Between runs the desired state is cleared and the new processor stopped, so
 * every run copies the whole file. Min/median/max over the runs.
 *
 *   npm run build && node dist/bench/model-replicas.js [--runs 3] [--mb 256]
 */
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import createTestnet from 'hyperdht/testnet.js'
import { encodeTinyModel, TINY_MODEL_NAME, writeTinyModel } from '../facilities/tiny-model/tiny-model.js'
import { MeshClient } from '../workers/client/client.worker.js'
import type { InventoryModel } from '../workers/gateway/model-inventory.js'
import { tcpCopy } from './copy-peers.js'
import { fmt, llamaProcessorArgs, median, spawnAccountedGateway, spawnWorker } from './lib.js'

const { values } = parseArgs({
  options: { runs: { type: 'string', default: '3' }, mb: { type: 'string', default: '256' } },
})
const RUNS = Number(values.runs)
const SIZE = Number(values.mb) * 1024 * 1024
const MODEL = 'bench-big'
const POLL_MS = 50
const RUN_TIMEOUT_MS = 10 * 60_000

const dir = await mkdtemp(join(tmpdir(), 'llm-mesh-bench-replicas-'))
const holderModels = join(dir, 'holder-models')
await mkdir(holderModels, { recursive: true })
const file = join(holderModels, `${MODEL}.gguf`)
await writeFile(file, Buffer.concat([encodeTinyModel(), Buffer.alloc(SIZE)]))
const fileBytes = (await stat(file)).size

const testnet = await createTestnet(3, { host: '127.0.0.1' })
const bootstrap = testnet.bootstrap.map((b) => `${b.host}:${b.port}`).join(',')
const { gateway, apiKey } = await spawnAccountedGateway(bootstrap, join(dir, 'gw'))
const processorArgs = (name: string, models: string) => llamaProcessorArgs(bootstrap, join(dir, name), models)
const holder = await spawnWorker(processorArgs('holder', holderModels))
const client = new MeshClient({
  config: { bootstrap: bootstrap.split(','), gateway: gateway.publicKey, log: { level: 'warn' } },
  apiKey,
})
await client.ready()

async function model(): Promise<InventoryModel | undefined> {
  return (await client.modelInventory()).models.find((m) => m.name === MODEL)
}

/** Polls the inventory until `done` holds; the time it first did, from `t0`. */
async function until(t0: number, done: (m: InventoryModel | undefined) => boolean): Promise<number> {
  for (;;) {
    if (done(await model())) return performance.now() - t0
    if (performance.now() - t0 > RUN_TIMEOUT_MS) throw new Error('timed out')
    await new Promise((r) => setTimeout(r, POLL_MS))
  }
}

interface Run {
  heldMs: number
  loadedMs: number
  /** The baseline: the same file over plain TCP, to disk and hashed, just before. */
  tcpMs: number
}

async function once(i: number): Promise<Run> {
  const tcpMs = await tcpCopy(file, join(dir, `tcp-${i}.gguf`), false)
  // The new processor holds only the tiny model (a llama.cpp processor serves a folder with one).
  const folder = join(dir, `receiver-models-${i}`)
  await writeTinyModel(join(folder, `${TINY_MODEL_NAME}.gguf`))
  const receiver = await spawnWorker(processorArgs(`receiver-${i}`, folder))
  try {
    const digest = (await model())?.holders?.[0]?.digest
    if (!digest) throw new Error('the holder does not list the model')
    // Seen by the gateway before the ask, so the time is the reconcile's, not the join's.
    for (;;) {
      const inv = await client.modelInventory()
      if (inv.processors?.some((p) => p.processor === receiver.publicKey && !p.error)) break
      await new Promise((r) => setTimeout(r, POLL_MS))
    }
    const t0 = performance.now()
    await client.modelDesired(MODEL, { replicas: 2, loaded: 2 })
    const on = (m: InventoryModel | undefined) => m?.holders?.find((h) => h.processor === receiver.publicKey)
    const heldMs = await until(t0, (m) => on(m)?.digest === digest)
    const loadedMs = await until(t0, (m) => on(m)?.loaded === true)
    return { heldMs, loadedMs, tcpMs }
  } finally {
    await client.modelDesired(MODEL, { replicas: 0 })
    await receiver.stop()
    await until(performance.now(), (m) => m?.held === 1)
  }
}

/** MB/s (10^6 bytes/s) of the whole file over `ms`. */
const mbps = (ms: number) => fileBytes / 1e3 / ms

const runs: Run[] = []
try {
  for (let i = 0; i < RUNS; i++) {
    const r = await once(i)
    runs.push(r)
    process.stdout.write(
      `run ${i + 1}: held ${fmt(r.heldMs / 1000)} s (${fmt(mbps(r.heldMs))} MB/s), loaded ${fmt(r.loadedMs / 1000)} s; ` +
        `TCP ${fmt(mbps(r.tcpMs))} MB/s; held / TCP ${fmt(r.tcpMs / r.heldMs, 2)}\n`,
    )
  }
  const line = (label: string, xs: number[], unit: string) => {
    const s = [...xs].sort((a, b) => a - b)
    return `${label.padEnd(28)} min ${fmt(s[0] ?? 0)}  median ${fmt(median(s))}  max ${fmt(s.at(-1) ?? 0)} ${unit}\n`
  }
  process.stdout.write(
    `\n${fmt(SIZE / 1e6)} MB GGUF, ${RUNS} runs, replicas 1 → 2 (loaded 2)\n` +
      line(
        'held (copied, verified)',
        runs.map((r) => r.heldMs / 1000),
        's',
      ) +
      line(
        'loaded (serving warm)',
        runs.map((r) => r.loadedMs / 1000),
        's',
      ) +
      line(
        'copy rate over held',
        runs.map((r) => mbps(r.heldMs)),
        'MB/s',
      ) +
      line(
        'TCP+disk+sha256 (baseline)',
        runs.map((r) => mbps(r.tcpMs)),
        'MB/s',
      ) +
      line(
        'held rate / TCP, per run',
        runs.map((r) => r.tcpMs / r.heldMs),
        '',
      ),
  )
} finally {
  await client.close()
  await holder.stop()
  await gateway.stop()
  await testnet.destroy()
  await rm(dir, { recursive: true, force: true })
}
