import { existsSync, readFileSync } from 'node:fs'
import { mkdir, rename, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { type ParseArgsConfig, parseArgs } from 'node:util'
import type { ConfigInput } from '../../kernel/config.js'
import { parseBootstrapList } from '../../kernel/config-bootstrap.js'
import { MeshError } from '../../kernel/errors.js'

export const DEFAULT_DATA_DIR = './.llm-mesh'
export const MESH_FILE = 'mesh.json'

/** What `up` writes to DATA/mesh.json so `chat --data DATA` and friends can join. */
export interface MeshFile {
  mesh: string
  bootstrap: string[]
  gateway: string
  pid: number
  startedAt: string
  http?: string
}

export type Options = NonNullable<ParseArgsConfig['options']>

/** Flags every worker command takes. */
export const WORKER_FLAGS: Options = {
  bootstrap: { type: 'string' },
  mesh: { type: 'string' },
  config: { type: 'string' },
  data: { type: 'string' },
  'log-level': { type: 'string' },
  relay: { type: 'string', multiple: true },
  help: { type: 'boolean', short: 'h' },
}

/**
 * Parses a command's flags. A string flag takes a value that starts with a dash when it is
 * a number (`--expires-days -1`), so the number reaches the flag's own check; node's parser
 * would call it ambiguous. Parser errors become ERR_BAD_REQUEST naming the flag.
 */
export function parse(
  args: string[],
  options: Options,
  allowPositionals = false,
): { values: Record<string, string | boolean | undefined>; positionals: string[] } {
  const joined: string[] = []
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string
    const next = args[i + 1]
    const name = arg.startsWith('--') ? arg.slice(2) : null
    if (name && options[name]?.type === 'string' && next !== undefined && /^-\d/.test(next)) {
      joined.push(`${arg}=${next}`)
      i++
    } else joined.push(arg)
  }
  try {
    const { values, positionals } = parseArgs({ args: joined, options, allowPositionals, strict: true })
    return { values: values as Record<string, string | boolean | undefined>, positionals }
  } catch (err) {
    throw MeshError.badRequest(parseError(err as Error & { code?: string }))
  }
}

/** Our words for node's parseArgs errors: the flag first, as in every other flag error. */
function parseError(err: Error & { code?: string }): string {
  const flag = /'(-[^' ]+)/.exec(err.message)?.[1]
  switch (err.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return `unknown flag '${flag ?? err.message}' (--help lists them)`
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL': {
      const arg = /'[^']*'/.exec(err.message)?.[0]
      return `unexpected argument${arg ? ` ${arg}` : ''} (--help lists the usage)`
    }
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      if (/does not take an argument/.test(err.message)) return `${flag}: takes no value`
      if (/ambiguous/.test(err.message)) return `${flag}: a value starting with '-' is given as ${flag}=VALUE`
      return `${flag}: needs a value`
    default:
      return err.message
  }
}

export function str(v: string | boolean | undefined): string | undefined {
  return typeof v === 'string' ? v : undefined
}

/** An integer flag in min…max (default: positive). @throws ERR_BAD_REQUEST naming the flag */
export function int(
  v: string | boolean | undefined,
  flag: string,
  min = 1,
  max = Number.MAX_SAFE_INTEGER,
): number | undefined {
  if (typeof v !== 'string') return undefined
  const n = v.trim() === '' ? Number.NaN : Number(v)
  if (!Number.isInteger(n) || n < min || n > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `from ${min} to ${max}`
    throw MeshError.badRequest(`--${flag}: expected an integer ${range}, got '${v}'`)
  }
  return n
}

export function dataDir(values: Record<string, string | boolean | undefined>): string {
  return resolve(str(values.data) ?? DEFAULT_DATA_DIR)
}

export function readMeshFile(dir: string): MeshFile | null {
  const path = join(dir, MESH_FILE)
  if (!existsSync(path)) return null
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as MeshFile
  } catch {
    throw MeshError.badConfig(`${path} is not valid JSON`)
  }
}

/** Whether process `pid` exists (EPERM: it does, as another user's). */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * The mesh `up` runs from `dir`: its mesh file, once checked that the `up` that wrote it
 * still runs. A killed `up` leaves the file behind, and joining through it would wait
 * ~20 s on a bootstrap that is gone.
 * @throws ERR_UNAVAILABLE when no mesh runs from `dir`, or its `up` is gone
 */
export function runningMesh(dir: string): MeshFile {
  const mesh = readMeshFile(dir)
  const up = `'llm-mesh up --data ${dir}'`
  if (!mesh) {
    throw new MeshError(
      'ERR_UNAVAILABLE',
      `no mesh is running from ${dir} (start one with ${up}, or pass --bootstrap)`,
    )
  }
  if (!Number.isInteger(mesh.pid) || mesh.pid <= 0 || !isAlive(mesh.pid)) {
    throw new MeshError(
      'ERR_UNAVAILABLE',
      `the mesh in ${dir} is not running: its 'llm-mesh up' (pid ${mesh.pid}) is gone and left ${join(dir, MESH_FILE)} behind; start it again with ${up}`,
      { pid: mesh.pid },
    )
  }
  return mesh
}

export async function writeMeshFile(dir: string, file: MeshFile): Promise<void> {
  await mkdir(dir, { recursive: true })
  const tmp = join(dir, `${MESH_FILE}.${process.pid}.tmp`)
  await writeFile(tmp, `${JSON.stringify(file, null, 2)}\n`)
  await rename(tmp, join(dir, MESH_FILE))
}

/**
 * The mesh a worker command joins through --data (the one `up` runs from there), or null
 * when --bootstrap names one or no --data is given.
 * @throws ERR_UNAVAILABLE when no mesh runs from --data
 */
export function dataMesh(values: Record<string, string | boolean | undefined>): MeshFile | null {
  if (str(values.bootstrap) || values.data === undefined) return null
  return runningMesh(dataDir(values))
}

/**
 * Config overrides from the common flags: --bootstrap, else the mesh `up` runs from
 * --data (`mesh`, from `dataMesh`); otherwise config/env must name the bootstrap.
 */
export function workerOverrides(
  values: Record<string, string | boolean | undefined>,
  mesh: MeshFile | null = null,
): ConfigInput {
  const out: ConfigInput = {}
  const bootstrap = str(values.bootstrap)
  if (bootstrap) out.bootstrap = parseBootstrapList(bootstrap)
  else if (mesh) {
    out.bootstrap = mesh.bootstrap
    out.mesh = mesh.mesh
  }
  const name = str(values.mesh)
  if (name) out.mesh = name
  const level = str(values['log-level'])
  if (level) out.log = { level }
  const relays = values.relay
  if (Array.isArray(relays)) out.net = { relays: relays.flatMap((v) => v.split(',')).filter(Boolean) }
  return out
}

/** A UTC day flag, YYYY-MM-DD and a real date. @throws ERR_BAD_REQUEST naming the flag */
export function day(v: string | boolean | undefined, flag: string): string | undefined {
  if (typeof v !== 'string') return undefined
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(v)
  const date = m ? new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]))) : null
  if (!date || date.toISOString().slice(0, 10) !== v)
    throw MeshError.badRequest(`--${flag}: expected a date YYYY-MM-DD, got '${v}'`)
  return v
}

/** Resolves on the first SIGINT/SIGTERM. */
export function waitForSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (sig: NodeJS.Signals) => {
      process.off('SIGINT', on)
      process.off('SIGTERM', on)
      resolve(sig)
    }
    process.on('SIGINT', on)
    process.on('SIGTERM', on)
  })
}
