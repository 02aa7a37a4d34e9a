import { type ChildProcess, spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

export const BIN = fileURLToPath(new URL('../bin/llm-mesh.js', import.meta.url))

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[i] as number
}

export function median(values: number[]): number {
  return percentile(
    [...values].sort((a, b) => a - b),
    50,
  )
}

export function fmt(n: number, digits = 3): string {
  return Number.isFinite(n) ? n.toFixed(digits) : String(n)
}

/** Starts `llm-mesh <args>` and resolves with the child and the key it printed on readiness (IPC). */
export async function spawnWorker(
  args: string[],
): Promise<{ child: ChildProcess; publicKey: string; stop(): Promise<void> }> {
  // LLM_MESH_BENCH_PROF=gateway (or processor) writes a V8 CPU profile of that worker to
  // LLM_MESH_BENCH_PROF_DIR (default ./bench/out) when it stops.
  const prof =
    process.env.LLM_MESH_BENCH_PROF === args[0]
      ? ['--cpu-prof', `--cpu-prof-dir=${process.env.LLM_MESH_BENCH_PROF_DIR ?? 'bench/out'}`]
      : []
  const child = spawn(process.execPath, [...prof, BIN, ...args, '--log-level', 'warn'], {
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const publicKey = await new Promise<string>((resolve, reject) => {
    child.on('message', (msg: { type?: string; publicKey?: string }) => {
      if (msg?.type === 'ready') resolve(msg.publicKey ?? '')
    })
    child.once('exit', (code) => reject(new Error(`llm-mesh ${args[0]} exited with ${code}`)))
  })
  return {
    child,
    publicKey,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
      await exited
    },
  }
}
