/**
 * The Ollama backend alone: CPU per call of `OllamaBackend.chat` in this
 * process, against the instant Ollama-protocol server of
 * bench/ollama-path.ts in a process of its own. `--concurrency` calls in
 * flight (64 like the processor in ollama-path), `--seconds` per round,
 * `--rounds` rounds; prints calls/s and this process's CPU µs per call
 * (user + system, from process.cpuUsage) per round. Run it under
 * `node --cpu-prof` to see where a call's CPU goes.
 *
 *   npm run build && node dist/bench/ollama-backend.js [--concurrency 64] [--seconds 2] [--rounds 3]
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { OllamaBackend } from '../facilities/backends/ollama/ollama.backend.js'
import { fmt, median } from './lib.js'

const { values } = parseArgs({
  options: {
    concurrency: { type: 'string', default: '64' },
    seconds: { type: 'string', default: '2' },
    rounds: { type: 'string', default: '3' },
  },
})
const CONCURRENCY = Number(values.concurrency)
const SECONDS = Number(values.seconds)
const ROUNDS = Number(values.rounds)
const MESSAGES = [{ role: 'user' as const, content: 'hello from the bench' }]

const server = await new Promise<{ child: ChildProcess; url: string }>((resolve, reject) => {
  const script = fileURLToPath(new URL('./ollama-protocol-server.js', import.meta.url))
  const child = spawn(process.execPath, [script], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  child.on('message', (m: { type?: string; url?: string }) => {
    if (m?.type === 'ready' && m.url) resolve({ child, url: m.url })
  })
  child.once('exit', (code) => reject(new Error(`ollama-protocol-server exited with ${code}`)))
})
const backend = new OllamaBackend({ host: server.url })
await backend.open()

/** Calls chat() from `CONCURRENCY` loops until `ms` have passed; returns the calls made. */
async function load(ms: number): Promise<number> {
  const until = performance.now() + ms
  let calls = 0
  const loop = async () => {
    while (performance.now() < until) {
      const r = await backend.chat({ model: 'echo', messages: MESSAGES }, { onToken: () => {} })
      if (!r.text.includes('hello from the bench')) throw new Error(`unexpected reply '${r.text}'`)
      calls++
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, loop))
  return calls
}

await load(1000) // warm-up: JIT, connections
const rates: number[] = []
const cpus: number[] = []
for (let round = 0; round < ROUNDS; round++) {
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  const calls = await load(SECONDS * 1000)
  const cpu = process.cpuUsage(cpu0)
  rates.push((calls * 1000) / (performance.now() - t0))
  cpus.push((cpu.user + cpu.system) / calls)
  console.log(
    `round ${round + 1}: ${fmt(rates.at(-1) ?? 0, 0)} calls/s, ${fmt(cpus.at(-1) ?? 0, 0)} µs CPU/call`,
  )
}
const range = (xs: number[]) =>
  `${fmt(median(xs), 0)} (${fmt(Math.min(...xs), 0)}–${fmt(Math.max(...xs), 0)})`
console.log(`backend chat() at ${CONCURRENCY} in flight: ${range(rates)} calls/s, ${range(cpus)} µs CPU/call`)

await backend.close()
const exited = new Promise((resolve) => server.child.once('exit', resolve))
server.child.disconnect()
await exited
