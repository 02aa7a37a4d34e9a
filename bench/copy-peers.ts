/**
 * The peer processes of the copy benches (bench/model-copy-peer.ts, one role each): started
 * with IPC, their messages awaited by type. Shared by bench/model-copy.ts (store vs TCP vs
 * HyperDHT) and bench/model-replicas.ts (the gateway's copy vs TCP, in the same run).
 */
import { type ChildProcess, fork } from 'node:child_process'
import { rm, stat } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { NODE_FLAGS } from '../bin/lib/node-flags.js'

const PEER = fileURLToPath(new URL('./model-copy-peer.js', import.meta.url))
const PROF_DIR = 'bench/out'

export interface Peer {
  child: ChildProcess
  /** The next IPC message of `type` (rejects if the child exits first). */
  next<T>(type: string): Promise<T>
  exited: Promise<number | null>
}

/** A peer process in `role`; `prof` writes a V8 CPU profile of it to bench/out. */
export function startPeer(role: string, args: string[], prof = false): Peer {
  const execArgv = [...NODE_FLAGS, ...(prof ? ['--cpu-prof', `--cpu-prof-dir=${PROF_DIR}`] : [])]
  const child = fork(PEER, [role, ...args], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  const messages: Array<{ type: string }> = []
  const waiters: Array<() => void> = []
  child.on('message', (msg: { type: string }) => {
    messages.push(msg)
    for (const w of waiters.splice(0)) w()
  })
  const next = <T>(type: string): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const check = () => {
        const i = messages.findIndex((m) => m.type === type)
        if (i >= 0) return resolve(messages.splice(i, 1)[0] as T)
        waiters.push(check)
      }
      exited.then((code) => reject(new Error(`${role} exited with ${code} before '${type}'`)))
      check()
    })
  return { child, next, exited }
}

/** Ends a peer (disconnecting its IPC) and checks it exited cleanly. */
export async function stopPeer(p: Peer): Promise<void> {
  if (p.child.connected) p.child.disconnect()
  const code = await p.exited
  if (code !== 0) throw new Error(`a peer exited with ${code}`)
}

/**
 * `file` over one loopback TCP connection between two new processes; ms from accept to the
 * end. `raw`: only counted; else written to `<dest>.partial`, hashed with sha256 as it
 * arrives and renamed in place (then removed): what a copy does to the bytes, nothing more.
 */
export async function tcpCopy(file: string, dest: string, raw: boolean): Promise<number> {
  const size = (await stat(file)).size
  const rx = startPeer('tcp-receiver', raw ? ['--raw'] : ['--dest', dest])
  const { port } = await rx.next<{ port: number }>('listening')
  const tx = startPeer('tcp-sender', ['--port', String(port), '--file', file])
  const done = await rx.next<{ ms: number; bytes: number }>('done')
  await Promise.all([stopPeer(tx), stopPeer(rx)])
  if (done.bytes !== size) throw new Error(`tcp: got ${done.bytes} bytes of ${size}`)
  if (!raw) await rm(dest)
  return done.ms
}
