import { existsSync, readFileSync } from 'node:fs'
import { mkdir, rename, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { type ParseArgsConfig, parseArgs } from 'node:util'
import { type ConfigInput, parseBootstrapList } from '../../workers/lib/config.js'
import { MeshError } from '../../workers/lib/errors.js'

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
  help: { type: 'boolean', short: 'h' },
}

export function parse(
  args: string[],
  options: Options,
  allowPositionals = false,
): { values: Record<string, string | boolean | undefined>; positionals: string[] } {
  try {
    const { values, positionals } = parseArgs({ args, options, allowPositionals, strict: true })
    return { values: values as Record<string, string | boolean | undefined>, positionals }
  } catch (err) {
    throw MeshError.badRequest((err as Error).message)
  }
}

export function str(v: string | boolean | undefined): string | undefined {
  return typeof v === 'string' ? v : undefined
}

/** A positive integer flag. @throws ERR_BAD_REQUEST naming the flag */
export function int(v: string | boolean | undefined, flag: string, min = 1): number | undefined {
  if (typeof v !== 'string') return undefined
  const n = Number(v)
  if (!Number.isInteger(n) || n < min)
    throw MeshError.badRequest(`--${flag}: expected an integer >= ${min}, got '${v}'`)
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

export async function writeMeshFile(dir: string, file: MeshFile): Promise<void> {
  await mkdir(dir, { recursive: true })
  const tmp = join(dir, `${MESH_FILE}.${process.pid}.tmp`)
  await writeFile(tmp, `${JSON.stringify(file, null, 2)}\n`)
  await rename(tmp, join(dir, MESH_FILE))
}

/**
 * Config overrides from the common flags. Without --bootstrap, a mesh file in
 * --data (written by `up`) supplies it; otherwise config/env must.
 */
export function workerOverrides(values: Record<string, string | boolean | undefined>): ConfigInput {
  const out: ConfigInput = {}
  const bootstrap = str(values.bootstrap)
  if (bootstrap) out.bootstrap = parseBootstrapList(bootstrap)
  else if (values.data !== undefined) {
    const mesh = readMeshFile(dataDir(values))
    if (mesh) {
      out.bootstrap = mesh.bootstrap
      out.mesh = mesh.mesh
    }
  }
  const mesh = str(values.mesh)
  if (mesh) out.mesh = mesh
  const level = str(values['log-level'])
  if (level) out.log = { level }
  return out
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
