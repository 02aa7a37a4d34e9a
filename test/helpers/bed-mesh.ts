/**
 * llm-mesh deployed on the namespace test bed (netns.ts) as an operator would: each command a
 * real process on its host, told only what that host would be told (nothing from this
 * machine's environment). Used by test/integration/across-nat.test.ts.
 */
import type { ChildProcess, SpawnOptions } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { TINY_MODEL_NAME, writeTinyModel } from '../../facilities/tiny-model/tiny-model.js'
import type { ProcessorView } from '../../kernel/wire.js'
import { captured } from './fresh-machine.js'
import { BIN, type T, TEST_AUTH, TEST_LOG } from './mesh.js'
import type { NetBed } from './netns.js'

const CLIENT = new URL('./bed-client.js', import.meta.url).pathname
const IPC: SpawnOptions['stdio'] = ['ignore', 'ignore', 'inherit', 'ipc']
/** Nothing of llm-mesh's settings from the machine running the tests (LLM_MESH_*). */
const ENV = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('LLM_MESH_')))
/** Longest a remote client's answer may take before the call fails. */
const CALL_TIMEOUT_MS = 60_000

/** Resolves with the child's first IPC `ready` message; rejects if it exits first. */
export function ready<M>(child: ChildProcess, what: string): Promise<M> {
  return new Promise((resolve, reject) => {
    child.on('message', (msg: M & { type?: string }) => {
      if (msg?.type === 'ready') resolve(msg)
    })
    child.once('exit', (code) => reject(new Error(`${what} exited with ${code} before it was ready`)))
  })
}

export type Call = <R>(
  msg: Record<string, unknown>,
) => Promise<R & { ok: boolean; code?: string; error?: string }>

export class BedMesh {
  /** host:port of the DHT bootstrap, once `startBootstrap` ran. */
  bootstrap = ''
  constructor(
    private readonly t: T,
    private readonly bed: NetBed,
    private readonly admin: { password: string },
  ) {}

  private node(host: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    return this.bed.spawn(host, process.execPath, args, { env: ENV, ...opts })
  }

  /** `llm-mesh bootstrap` on `host` (its address, port 49737); the relay's key with `relay`. */
  async startBootstrap(host: string, opts: { relay?: boolean } = {}): Promise<string | null> {
    const ip = this.bed.host(host).ip
    const relay = opts.relay ? ['--relay', '--data', await this.t.tmp()] : []
    const child = this.node(host, [BIN, 'bootstrap', '--host', ip, '--port', '49737', ...relay], {
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    this.bootstrap = `${ip}:49737`
    const io = captured(child)
    return new Promise((resolve, reject) => {
      child.stdout?.on('data', () => {
        if (!io.out().includes('bootstrap ready')) return
        resolve(/relay ([0-9a-f]{64})/.exec(io.out())?.[1] ?? null)
      })
      child.once('exit', (code) => reject(new Error(`bootstrap exited with ${code}`)))
    })
  }

  /** `llm-mesh gateway` on `host`, its first admin's password from the environment; its key. */
  async startGateway(host: string, config: Record<string, unknown>, args: string[] = []): Promise<string> {
    const file = join(await this.t.tmp(), 'gateway.json')
    await writeFile(file, JSON.stringify({ auth: TEST_AUTH, log: TEST_LOG, ...config }))
    const store = await this.t.tmp()
    const child = this.node(
      host,
      [BIN, 'gateway', '--bootstrap', this.bootstrap, '--store', store, '--config', file, ...args],
      { stdio: IPC, env: { ...ENV, LLM_MESH_ADMIN_PASSWORD: this.admin.password } },
    )
    return (await ready<{ publicKey: string }>(child, `gateway on ${host}`)).publicKey
  }

  /** An admin's `llm-mesh <args>` on `host`, signed in as `admin`. */
  async cli(host: string, args: string[]): Promise<{ code: unknown; out: string; err: string }> {
    const child = this.node(host, [BIN, ...args, '--bootstrap', this.bootstrap, '--user', 'admin'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...ENV, LLM_MESH_PASSWORD: this.admin.password },
    })
    const io = captured(child)
    const code = await new Promise((r) => child.once('exit', r))
    return { code, out: io.out().trim(), err: io.err() }
  }

  /** `llm-mesh processor --join TOKEN` on `host`, serving the tiny model with llama.cpp. */
  async joinProcessor(host: string, token: string, args: string[] = []) {
    const models = await this.t.tmp()
    await writeTinyModel(join(models, `${TINY_MODEL_NAME}.gguf`))
    const child = this.node(
      host,
      [BIN, 'processor', '--join', token, '--data', await this.t.tmp(), '--models', models].concat([
        '--backend',
        'llamacpp',
        ...args,
      ]),
      { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] },
    )
    return { child, stderr: captured(child).err }
  }

  /** A signed-in MeshClient on `host` (bed-client.js), driven by `call`. */
  async startClient(
    host: string,
  ): Promise<{ call: Call; serving(): Promise<Set<string>>; status(): Promise<ProcessorView[]> }> {
    const child = this.node(host, [CLIENT, JSON.stringify({ bootstrap: [this.bootstrap], log: TEST_LOG })], {
      stdio: IPC,
      env: { ...ENV, LLM_MESH_USER: 'admin', LLM_MESH_PASSWORD: this.admin.password },
    })
    await ready(child, `client on ${host}`)
    let next = 0
    const exited = new Promise<never>((_, reject) =>
      child.once('exit', (code) => reject(new Error(`the client on ${host} exited with ${code}`))),
    )
    exited.catch(() => {})
    const call: Call = (msg) => {
      const id = ++next
      let timer: NodeJS.Timeout | undefined
      const answered = new Promise<never>((resolve, reject) => {
        const on = (m: { id?: number }) => {
          if (m?.id !== id) return
          child.off('message', on)
          resolve(m as never)
        }
        child.on('message', on)
        child.send({ id, ...msg })
        timer = setTimeout(
          () => reject(new Error(`no answer to ${String(msg.op)} in ${CALL_TIMEOUT_MS} ms`)),
          CALL_TIMEOUT_MS,
        )
      })
      return Promise.race([answered, exited]).finally(() => clearTimeout(timer))
    }
    /** The gateway's view of its processors. @throws when the gateway did not answer */
    const status = async () => {
      const res = await call<{ status: { processors: ProcessorView[] } }>({ op: 'status' })
      if (!res.ok) throw new Error(`status: ${res.code}: ${res.error}`)
      return res.status.processors
    }
    const serving = async () =>
      new Set((await status()).filter((p) => p.state === 'serving').map((p) => p.publicKey))
    return { call, serving, status }
  }
}
