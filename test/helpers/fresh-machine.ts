/**
 * `llm-mesh <command>` as a new machine runs it: a real child process with nothing of this
 * machine's llm-mesh settings (no trusted gateways, no bootstrap from the environment), its
 * output collected, its `ready` IPC message awaited, killed at the test's end.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { BIN, type T, TEST_LOG } from './mesh.js'

export interface Run {
  child: ChildProcess
  /** The worker's key once it serves, or null when it exited first. */
  ready: Promise<string | null>
  exited: Promise<number | null>
  stdout: () => string
  stderr: () => string
  /** SIGTERM, then waits for the exit. */
  stop(): Promise<void>
}

/** Collects a child's stdout and stderr as they come. */
export function captured(child: ChildProcess): { out: () => string; err: () => string } {
  let out = ''
  let err = ''
  child.stdout?.on('data', (d: Buffer) => {
    out += d
  })
  child.stderr?.on('data', (d: Buffer) => {
    err += d
  })
  return { out: () => out, err: () => err }
}

export function runFresh(t: T, args: string[], env: NodeJS.ProcessEnv = {}): Run {
  const base: NodeJS.ProcessEnv = { ...process.env, ...env }
  delete base.LLM_MESH_TRUSTED_GATEWAYS
  delete base.LLM_MESH_BOOTSTRAP
  const [command, ...rest] = args
  const child = spawn(process.execPath, [BIN, command as string, '--log-level', TEST_LOG.level, ...rest], {
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    env: base,
  })
  const io = captured(child)
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  const ready = new Promise<string | null>((resolve) => {
    child.on('message', (m: { type?: string; publicKey?: string }) => {
      if (m?.type === 'ready') resolve(m.publicKey ?? '')
    })
    void exited.then(() => resolve(null))
  })
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
    await exited
  }
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await exited
  })
  return { child, ready, exited, stdout: io.out, stderr: io.err, stop }
}
