import { type ChildProcess, execFile, spawn, spawnSync } from 'node:child_process'
import { mkdir, writeFile } from 'node:fs/promises'
import { type Agent, request } from 'node:http'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { NODE_FLAGS } from '../bin/lib/node-flags.js'
import { MeshClient } from '../workers/client/client.worker.js'

export const BIN = fileURLToPath(new URL('../bin/llm-mesh.js', import.meta.url))

/** User limits that never bind: what the benches' accounted gateways run with. */
export const UNLIMITED = { rpm: null, tpm: null, dailyTokens: null, monthlyTokens: null }

/** Gateways started so far; processors started later admit them. */
const trustedGateways = new Set<string>()

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[i] as number
}

/** The median of the finite values (a failed measurement, NaN, would sort anywhere); NaN when none. */
export function median(values: number[]): number {
  return percentile(
    values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b),
    50,
  )
}

export function fmt(n: number, digits = 3): string {
  return Number.isFinite(n) ? n.toFixed(digits) : String(n)
}

/**
 * One POST of a JSON `body` to `url` + `path` through `agent`; resolves with
 * ms to the first body byte (0 when there was none) and to the end.
 * @throws `<label>: HTTP <status>` on any status but 200
 */
export function timedPost(
  agent: Agent,
  url: URL,
  path: string,
  body: string,
  headers: Record<string, string>,
  label: string,
): Promise<{ firstMs: number; totalMs: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now()
    let first = 0
    const req = request(
      {
        agent,
        host: url.hostname,
        port: url.port,
        path,
        method: 'POST',
        headers: {
          'Content-Type': 'application/json',
          'Content-Length': Buffer.byteLength(body),
          ...headers,
        },
      },
      (res) => {
        if (res.statusCode !== 200) reject(new Error(`${label}: HTTP ${res.statusCode}`))
        res.on('data', () => {
          if (first === 0) first = performance.now() - t0
        })
        res.on('end', () => resolve({ firstMs: first, totalMs: performance.now() - t0 }))
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.end(body)
  })
}

let wrkInstalled: boolean | undefined

/** A duration as wrk prints it (`302.00us`, `1.09ms`, `2.01s` — seconds padded with a space), in ms. */
function wrkMs(text: string | undefined): number {
  const m = /^([\d.]+)(us|ms|s)$/.exec(text ?? '')
  if (!m) return Number.NaN
  return Number(m[1]) * { us: 0.001, ms: 1, s: 1000 }[m[2] as 'us' | 'ms' | 's']
}

/**
 * wrk (a C load generator: one thread, `connections` keep-alive connections,
 * `seconds`) POSTing `body` to `url` + `path`, when it is installed (Debian:
 * apt-get install wrk); null without it. It takes far less CPU than a Node
 * client (~15 µs per request against ~100), so more of the 2 cores go to what
 * is measured. A request may take up to 10 s (wrk's default of 2 s counts a
 * slow answer on a busy machine as a socket error). Writes its Lua script into
 * `dir`. Returns req/s, the number of requests, and p50 and p99 ms from its
 * latency histogram.
 * @throws `<label>: wrk saw errors` when an answer was not a 2xx or a connection failed or timed out
 */
export async function runWrk(
  label: string,
  dir: string,
  url: URL,
  path: string,
  body: string,
  headers: Record<string, string>,
  connections: number,
  seconds: number,
): Promise<{ rps: number; requests: number; p50: number; p99: number } | null> {
  wrkInstalled ??= !spawnSync('wrk', ['--version']).error
  if (!wrkInstalled) return null
  const script = join(dir, `wrk-${url.port}.lua`)
  const lines = Object.entries({ 'Content-Type': 'application/json', ...headers }).map(
    ([k, v]) => `wrk.headers["${k}"] = "${v}"`,
  )
  // A Lua long string: the body as it is, whatever quotes it holds.
  await writeFile(script, `wrk.method = "POST"\nwrk.body = [==[${body}]==]\n${lines.join('\n')}\n`)
  const output = await new Promise<string>((resolve, reject) => {
    execFile(
      'wrk',
      [
        '-t1',
        `-c${connections}`,
        `-d${seconds}s`,
        '--timeout',
        '10s',
        '--latency',
        '-s',
        script,
        `${url.origin}${path}`,
      ],
      (err, stdout) => (err ? reject(err) : resolve(stdout)),
    )
  })
  if (/Non-2xx/.test(output) || /Socket errors:.*[1-9]/.test(output)) {
    throw new Error(`${label}: wrk saw errors\n${output}`)
  }
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(output)?.[1]
  const requests = /(\d+) requests in/.exec(output)?.[1]
  if (!rps || !requests) return null
  return {
    rps: Number(rps),
    requests: Number(requests),
    p50: wrkMs(/^\s*50%\s+(\S+)\s*$/m.exec(output)?.[1]),
    p99: wrkMs(/^\s*99%\s+(\S+)\s*$/m.exec(output)?.[1]),
  }
}

/**
 * Calls `attempt` every 100 ms until it resolves: a worker that has just
 * started may not route yet. @throws the last failure after `timeoutMs`
 */
export async function untilItAnswers(attempt: () => Promise<unknown>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      await attempt()
      return
    } catch (err) {
      if (Date.now() > deadline) throw err
      await new Promise((r) => setTimeout(r, 100))
    }
  }
}

/** Starts `llm-mesh <args>` and resolves with the child and the key it printed on readiness (IPC). */
export async function spawnWorker(
  args: string[],
): Promise<{ child: ChildProcess; publicKey: string; httpUrl: string | null; stop(): Promise<void> }> {
  // LLM_MESH_BENCH_PROF=gateway (or processor) writes a V8 CPU profile of that worker to
  // LLM_MESH_BENCH_PROF_DIR (default ./bench/out) when it stops, sampling every
  // LLM_MESH_BENCH_PROF_INTERVAL µs (V8's default: 1000).
  const outDir = process.env.LLM_MESH_BENCH_PROF_DIR ?? 'bench/out'
  const interval = process.env.LLM_MESH_BENCH_PROF_INTERVAL
  const prof =
    process.env.LLM_MESH_BENCH_PROF === args[0]
      ? ['--cpu-prof', `--cpu-prof-dir=${outDir}`, ...(interval ? [`--cpu-prof-interval=${interval}`] : [])]
      : []
  // LLM_MESH_BENCH_CALLGRIND=gateway runs that worker under valgrind's callgrind with counting off
  // (`callgrind_control -i on|off <pid>` brackets a load): instruction counts per request do not
  // drift with the machine's load the way seconds do.
  const callgrind =
    process.env.LLM_MESH_BENCH_CALLGRIND === args[0]
      ? [
          '--tool=callgrind',
          '--instr-atstart=no',
          `--callgrind-out-file=${outDir}/callgrind.%p`,
          process.execPath,
        ]
      : []
  const [command, ...argv] = callgrind.length > 0 ? ['valgrind', ...callgrind] : [process.execPath]
  const child = spawn(
    command as string,
    [...argv, ...NODE_FLAGS, ...prof, BIN, ...args, '--log-level', 'warn'],
    {
      // Processors serve the gateways started before them (their firewall).
      env: { ...process.env, LLM_MESH_TRUSTED_GATEWAYS: [...trustedGateways].join(',') },
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    },
  )
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  let httpUrl: string | null = null
  const publicKey = await new Promise<string>((resolve, reject) => {
    child.on('message', (msg: { type?: string; publicKey?: string; http?: string }) => {
      if (msg?.type !== 'ready') return
      httpUrl = msg.http ?? null
      resolve(msg.publicKey ?? '')
    })
    child.once('exit', (code) => reject(new Error(`llm-mesh ${args[0]} exited with ${code}`)))
  })
  if (args[0] === 'gateway') trustedGateways.add(publicKey)
  return {
    child,
    publicKey,
    httpUrl,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
      await exited
    },
  }
}

/**
 * A gateway with accounts, as an operator runs one: its first admin made
 * offline on its store (`llm-mesh user add --store`), then started, and an API
 * key made through it. `config` is written to `<dir>/gateway.json`.
 */
export async function spawnAccountedGateway(
  bootstrap: string,
  dir: string,
  config: object = {},
): Promise<{ gateway: Awaited<ReturnType<typeof spawnWorker>>; apiKey: string }> {
  await mkdir(dir, { recursive: true })
  const configFile = join(dir, 'gateway.json')
  await writeFile(configFile, JSON.stringify(config))
  const store = join(dir, 'store')
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
      store,
      '--config',
      configFile,
    ],
    { encoding: 'utf8' },
  )
  if (made.status !== 0) throw new Error(`user add failed: ${made.stderr}`)
  const gateway = await spawnWorker([
    'gateway',
    '--bootstrap',
    bootstrap,
    '--store',
    store,
    '--config',
    configFile,
  ])
  const client = new MeshClient({
    config: { bootstrap: bootstrap.split(','), gateway: gateway.publicKey, log: { level: 'warn' } },
  })
  try {
    await client.ready()
    await client.login('bench', 'bench-password')
    const { key } = await client.createKey({ name: 'bench' })
    return { gateway, apiKey: key }
  } finally {
    await client.close()
  }
}

/** A processor with the instant echo backend (paced when `tps` is set), serving the gateways started before it. */
export function spawnEchoProcessor(
  bootstrap: string,
  store: string,
  opts: { parallel?: number; tps?: number; weight?: number } = {},
): ReturnType<typeof spawnWorker> {
  const { parallel = 64, tps, weight } = opts
  return spawnWorker([
    'processor',
    '--bootstrap',
    bootstrap,
    '--store',
    store,
    '--backend',
    'echo',
    '--parallel',
    String(parallel),
    ...(tps ? ['--throttle-tps', String(tps)] : []),
    ...(weight !== undefined ? ['--weight', String(weight)] : []),
  ])
}

/** `llm-mesh processor` arguments: llama.cpp on the GGUF files in `models`, one generation at a time. */
export function llamaProcessorArgs(bootstrap: string, store: string, models: string): string[] {
  return [
    'processor',
    '--bootstrap',
    bootstrap,
    '--store',
    store,
    '--models',
    models,
    '--backend',
    'llamacpp',
    '--parallel',
    '1',
  ]
}
