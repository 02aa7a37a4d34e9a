import { existsSync, readFileSync } from 'node:fs'
import { isAbsolute, join, resolve } from 'node:path'
import type { z } from 'zod'
import { type ConfigInput, parseConfig } from './config.js'
import { parseBootstrapList } from './config-bootstrap.js'
import { MeshError } from './errors.js'
import { isRecord } from './util.js'

/**
 * Where a worker's config comes from: `config/<role>.json` (optional unless named), then
 * environment overrides, then explicit overrides from the CLI or a test, merged and then
 * validated once (config.ts).
 */

/** Environment overrides, applied over the file and under explicit overrides. */
export function envOverrides(env: NodeJS.ProcessEnv, role: string): ConfigInput {
  const out: ConfigInput = {}
  if (env.LLM_MESH_BOOTSTRAP) out.bootstrap = parseBootstrapList(env.LLM_MESH_BOOTSTRAP)
  if (env.LLM_MESH_STORE) out.store = env.LLM_MESH_STORE
  if (env.LLM_MESH_MESH) out.mesh = env.LLM_MESH_MESH
  if (env.LLM_MESH_LOG_LEVEL) out.log = { level: env.LLM_MESH_LOG_LEVEL }
  if (env.LLM_MESH_RELAYS) out.net = { relays: env.LLM_MESH_RELAYS.split(/[\s,]+/).filter(Boolean) }
  if (role === 'processor') {
    const backend: ConfigInput = {}
    if (env.OLLAMA_HOST) backend.ollamaHost = normalizeOllamaHost(env.OLLAMA_HOST)
    if (env.LLM_MESH_MODELS) backend.modelsDir = env.LLM_MESH_MODELS
    if (Object.keys(backend).length) out.backend = backend
    const firewall: ConfigInput = {}
    if (env.LLM_MESH_TRUSTED_GATEWAYS) {
      firewall.trustedGateways = env.LLM_MESH_TRUSTED_GATEWAYS.split(/[\s,]+/).filter(Boolean)
    }
    if (env.LLM_MESH_SECRET) firewall.meshSecret = env.LLM_MESH_SECRET
    if (Object.keys(firewall).length) out.firewall = firewall
  }
  if (role === 'gateway' && env.LLM_MESH_SECRET) out.meshSecret = env.LLM_MESH_SECRET
  return out
}

/** OLLAMA_HOST may be `host`, `host:port` or a URL, as Ollama itself accepts. */
export function normalizeOllamaHost(value: string): string {
  const v = value.trim()
  if (/^https?:\/\//.test(v)) return v
  return `http://${v.includes(':') ? v : `${v}:11434`}`
}

export function deepMerge(...layers: ConfigInput[]): ConfigInput {
  const out: ConfigInput = {}
  for (const layer of layers) {
    for (const [k, v] of Object.entries(layer)) {
      if (v === undefined) continue
      const prev = out[k]
      out[k] = isRecord(prev) && isRecord(v) ? deepMerge(prev, v) : v
    }
  }
  return out
}

/**
 * Reads a config file: `{}` for a missing default (`config/<role>.json` is optional), but a
 * file the operator named (`required`, e.g. `--config FILE`) must exist.
 * @throws ERR_BAD_CONFIG for a missing required file or unreadable JSON
 */
export function readConfigFile(path: string, required = false): ConfigInput {
  if (!existsSync(path)) {
    if (required) throw MeshError.badConfig(`config file ${path} does not exist`, { file: path })
    return {}
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'))
  } catch (err) {
    throw MeshError.badConfig(`${path} is not valid JSON: ${(err as Error).message}`, { file: path })
  }
  if (!isRecord(parsed)) throw MeshError.badConfig(`${path} must hold a JSON object`, { file: path })
  return parsed
}

export interface LoadConfigOptions {
  /** Explicit file; default `<configDir>/<role>.json`. */
  file?: string
  configDir?: string
  env?: NodeJS.ProcessEnv
  overrides?: ConfigInput
}
export function loadConfig<S extends z.ZodType>(
  schema: S,
  role: string,
  opts: LoadConfigOptions = {},
): z.output<S> {
  const { configDir = 'config', env = process.env, overrides = {} } = opts
  const file = opts.file ?? join(configDir, `${role}.json`)
  const merged = deepMerge(readConfigFile(file, opts.file !== undefined), envOverrides(env, role), overrides)
  return parseConfig(schema, merged)
}

export function resolvePath(base: string, p: string): string {
  return isAbsolute(p) ? p : resolve(base, p)
}
