/**
 * End-to-end generation speed through the mesh against node-llama-cpp called
 * directly, in the same run, on the same model (the looping tiny model, so
 * every request generates exactly `--tokens` tokens).
 *
 * - baseline: node-llama-cpp in this process (`LlamaCompletion`, 1 thread, 1 sequence)
 * - backend: the processor's LlamaCppBackend in this process (the wrapper's cost)
 * - mesh: MeshClient → gateway process (API key, limits, ledger) → processor process (llama.cpp backend,
 *   1 thread, 1 parallel), streamed, raw prompt, the same tokens; once with the
 *   default chunk coalescing (`streamCoalesceMs` 10) and once with one chunk per token
 *
 * Each is timed from the request to the last token. Runs are interleaved, in
 * an order that rotates every round, so drift in the machine's speed and
 * warm-up effects hit every path alike; only one path generates at a time.
 *
 *   npm run build && node dist/bench/inference.js [--tokens 200] [--runs 15]
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import createTestnet from 'hyperdht/testnet.js'
import { getLlama, LlamaCompletion } from 'node-llama-cpp'
import { LlamaCppBackend } from '../facilities/backends/llamacpp/llamacpp.backend.js'
import { writeTinyModel } from '../facilities/tiny-model/tiny-model.js'
import { MeshClient } from '../workers/client/client.worker.js'
import { fmt, llamaProcessorArgs, median, spawnAccountedGateway, spawnWorker } from './lib.js'

const { values } = parseArgs({
  options: { tokens: { type: 'string', default: '200' }, runs: { type: 'string', default: '15' } },
})
const TOKENS = Number(values.tokens)
const RUNS = Number(values.runs)
const WARMUP = 3
const PROMPT = 'a'

interface Run {
  ms: number
  tokens: number
  firstTokenMs: number
}

interface Path {
  label: string
  once: () => Promise<Run>
  runs: Run[]
}

const tps = (runs: Run[]) => median(runs.map((r) => (r.tokens * 1000) / r.ms))
const ttft = (runs: Run[]) => median(runs.map((r) => r.firstTokenMs))

const dir = await mkdtemp(join(tmpdir(), 'llm-mesh-bench-'))
/** One folder per processor, so the two mesh paths serve differently named models. */
async function modelIn(sub: string, name: string): Promise<string> {
  const folder = join(dir, sub)
  await writeTinyModel(join(folder, `${name}.gguf`), { loop: true })
  return folder
}
const modelsDir = await modelIn('models', 'bench-loop')
const perTokenDir = await modelIn('models-per-token', 'bench-loop-per-token')

// Baseline: node-llama-cpp directly.
const llama = await getLlama({ build: 'never', gpu: false, maxThreads: 1 })
const model = await llama.loadModel({ modelPath: join(modelsDir, 'bench-loop.gguf') })
const context = await model.createContext({ contextSize: 2048, sequences: 1, threads: 1 })
const sequence = context.getSequence()
async function direct(): Promise<Run> {
  const completion = new LlamaCompletion({ contextSequence: sequence, autoDisposeSequence: false })
  const t0 = performance.now()
  let first = 0
  let tokens = 0
  await completion.generateCompletion(PROMPT, {
    temperature: 0,
    maxTokens: TOKENS,
    onToken: (t) => {
      if (tokens === 0) first = performance.now() - t0
      tokens += t.length
    },
  })
  const ms = performance.now() - t0
  completion.dispose({ disposeSequence: false })
  await sequence.clearHistory()
  return { ms, tokens, firstTokenMs: first }
}

// The processor's engine in this process.
const backend = new LlamaCppBackend({ modelsDir, threads: 1, maxParallel: 1 })
await backend.open()
async function inProcess(): Promise<Run> {
  const t0 = performance.now()
  let first = 0
  const r = await backend.generate(
    { model: 'bench-loop', prompt: PROMPT, raw: true, options: { temperature: 0, num_predict: TOKENS } },
    {
      onToken: () => {
        if (first === 0) first = performance.now() - t0
      },
    },
  )
  return { ms: performance.now() - t0, tokens: r.completionTokens, firstTokenMs: first }
}

// The mesh: gateway and processors as their own processes on a loopback testnet.
const testnet = await createTestnet(3, { host: '127.0.0.1' })
const bootstrap = testnet.bootstrap.map((b) => `${b.host}:${b.port}`).join(',')
const { gateway, apiKey } = await spawnAccountedGateway(bootstrap, join(dir, 'gw'))
const processorArgs = (name: string, models: string) => llamaProcessorArgs(bootstrap, join(dir, name), models)
const perTokenConfig = join(dir, 'conf', 'processor.json')
await mkdir(join(dir, 'conf'))
await writeFile(perTokenConfig, JSON.stringify({ streamCoalesceMs: 0 }))
const processors = [
  await spawnWorker(processorArgs('proc', modelsDir)),
  await spawnWorker([...processorArgs('proc-per-token', perTokenDir), '--config', perTokenConfig]),
]
const client = new MeshClient({
  config: { bootstrap: bootstrap.split(','), gateway: gateway.publicKey, log: { level: 'warn' } },
  apiKey,
})
await client.ready()
while ((await client.status()).processors.length < 2) await new Promise((r) => setTimeout(r, 100))

function viaMesh(model: string) {
  return async (): Promise<Run> => {
    const t0 = performance.now()
    let first = 0
    let tokens = 0
    const stream = client.generate({
      model,
      prompt: PROMPT,
      raw: true,
      options: { temperature: 0, num_predict: TOKENS },
      stream: true,
    })
    for await (const part of stream) {
      if (part.done) tokens = part.result.completionTokens
      else if (first === 0) first = performance.now() - t0
    }
    return { ms: performance.now() - t0, tokens, firstTokenMs: first }
  }
}

const paths: Path[] = [
  { label: 'node-llama-cpp direct (baseline)', once: direct, runs: [] },
  { label: 'llm-mesh llama.cpp backend, in process', once: inProcess, runs: [] },
  { label: 'mesh: client → gateway → processor', once: viaMesh('bench-loop'), runs: [] },
  {
    label: 'mesh, one chunk per token (streamCoalesceMs 0)',
    once: viaMesh('bench-loop-per-token'),
    runs: [],
  },
]
for (let i = 0; i < WARMUP + RUNS; i++) {
  // Rotate the order each round: no path always runs right after another one.
  for (const path of [...paths.slice(i % paths.length), ...paths.slice(0, i % paths.length)]) {
    const r = await path.once()
    if (r.tokens !== TOKENS) throw new Error(`${path.label}: ${r.tokens} tokens, expected ${TOKENS}`)
    if (i >= WARMUP) path.runs.push(r)
  }
}

const base = paths[0] as Path
console.log(
  `Generation, looping tiny model, ${TOKENS} tokens per request, median of ${RUNS} interleaved runs (after ${WARMUP} warm-up), 1 thread`,
)
console.log('| path | tokens/s | ratio to direct | time to first token ms |')
console.log('|---|---|---|---|')
for (const p of paths) {
  console.log(
    `| ${p.label} | ${fmt(tps(p.runs), 0)} | ${fmt(tps(p.runs) / tps(base.runs), 3)} | ${fmt(ttft(p.runs), 2)} |`,
  )
}

await client.close()
for (const p of processors) await p.stop()
await gateway.stop()
await testnet.destroy()
await backend.close()
await context.dispose()
await model.dispose()
await llama.dispose()
await rm(dir, { recursive: true, force: true })
