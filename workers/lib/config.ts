import { existsSync, readFileSync } from 'node:fs'
import { isAbsolute, join, resolve } from 'node:path'
import type { HostPort } from 'hyperdht'
import { z } from 'zod'
import { MeshError } from './errors.js'

/**
 * Worker configuration: `config/<role>.json` (only `*.json.example` is
 * committed), then environment overrides, then explicit overrides from the CLI
 * or a test, validated once with a message that names the bad field.
 */

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|localhost|::1)$/

const hostPort = z.string().transform((s, ctx): HostPort => {
  const m = /^(.+):(\d{1,5})$/.exec(s.trim())
  const port = m ? Number(m[2]) : Number.NaN
  if (!m || port < 1 || port > 65535) {
    ctx.addIssue({ code: 'custom', message: `'${s}' is not host:port` })
    return z.NEVER
  }
  return { host: m[1] === 'localhost' ? '127.0.0.1' : (m[1] as string), port }
})

const hostPortList = z.array(hostPort).min(1, 'needs at least one host:port (or "public")')

/** `public`, or a non-empty list of host:port. There is deliberately no default. */
export const bootstrapSchema = z.unknown().transform((v, ctx): 'public' | HostPort[] => {
  if (v === 'public') return 'public'
  if (v === undefined || v === null || v === '') {
    ctx.addIssue({
      code: 'custom',
      message: 'required: a list of "host:port" DHT bootstrap nodes, or "public" for the public HyperDHT',
    })
    return z.NEVER
  }
  const list = hostPortList.safeParse(typeof v === 'string' ? parseBootstrapList(v) : v)
  if (list.success) return list.data
  for (const issue of list.error.issues)
    ctx.addIssue({ code: 'custom', message: issue.message, path: issue.path })
  return z.NEVER
})

const logLevel = z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'])

export const baseConfigSchema = z.object({
  mesh: z
    .string()
    .regex(/^[a-zA-Z0-9._-]{1,64}$/, 'letters, digits, . _ - only (1-64)')
    .default('default'),
  bootstrap: bootstrapSchema,
  /** Folder of this worker's store (identity seed, and the gateway's data). */
  store: z.string().min(1).optional(),
  net: z
    .object({
      host: z.string().optional(),
      port: z.number().int().min(0).max(65535).optional(),
      firewalled: z.boolean().optional(),
      requestTimeoutMs: z.number().int().positive().default(10_000),
    })
    .strict()
    .default({ requestTimeoutMs: 10_000 }),
  log: z
    .object({ level: logLevel.default('info') })
    .strict()
    .default({ level: 'info' }),
  /** How long a stopping worker waits for in-flight requests. */
  drainTimeoutMs: z.number().int().nonnegative().default(10_000),
})

export const backendConfigSchema = z
  .object({
    type: z.enum(['auto', 'llamacpp', 'ollama']).default('auto'),
    modelsDir: z.string().min(1).optional(),
    ollamaHost: z.string().url().default('http://127.0.0.1:11434'),
    threads: z.number().int().positive().default(1),
    gpu: z.union([z.literal(false), z.literal('auto')]).default(false),
    contextSize: z.number().int().min(128).default(2048),
    maxParallel: z.number().int().min(1).max(64).default(2),
    /** Write the tiny test model when no other model is found (`up` does; a bare processor does not). */
    tinyModelFallback: z.boolean().default(false),
  })
  .strict()

export const processorConfigSchema = baseConfigSchema
  .extend({
    backend: backendConfigSchema.default({
      type: 'auto',
      ollamaHost: 'http://127.0.0.1:11434',
      threads: 1,
      gpu: false,
      contextSize: 2048,
      maxParallel: 2,
      tinyModelFallback: false,
    }),
    maxPromptBytes: z
      .number()
      .int()
      .positive()
      .default(1024 * 1024),
    /** Streamed text arriving faster than this is sent in one chunk (0: one chunk per token). */
    streamCoalesceMs: z.number().min(0).max(1000).default(10),
  })
  .strict()

export const gatewayConfigSchema = baseConfigSchema
  .extend({
    maxPromptBytes: z
      .number()
      .int()
      .positive()
      .default(1024 * 1024),
    /** Longest a single generation may take end to end. */
    inferenceTimeoutMs: z.number().int().positive().default(300_000),
    registry: z
      .object({
        lookupIntervalMs: z.number().int().positive().default(3_000),
        heartbeatIntervalMs: z.number().int().positive().default(1_000),
        heartbeatTimeoutMs: z.number().int().positive().default(1_500),
        /** Missed heartbeats before a processor is dropped. */
        maxMissed: z.number().int().positive().default(2),
      })
      .strict()
      .default({
        lookupIntervalMs: 3_000,
        heartbeatIntervalMs: 1_000,
        heartbeatTimeoutMs: 1_500,
        maxMissed: 2,
      }),
  })
  .strict()

export const clientConfigSchema = baseConfigSchema
  .extend({
    /** Hex public key of a gateway to use instead of looking one up. */
    gateway: z
      .string()
      .regex(/^[0-9a-f]{64}$/i, '64 hex characters')
      .optional(),
    inferenceTimeoutMs: z.number().int().positive().default(300_000),
  })
  .strict()

export type BaseConfig = z.infer<typeof baseConfigSchema>
export type ProcessorConfig = z.infer<typeof processorConfigSchema>
export type GatewayConfig = z.infer<typeof gatewayConfigSchema>
export type ClientConfig = z.infer<typeof clientConfigSchema>
export type BackendConfig = z.infer<typeof backendConfigSchema>

export type ConfigInput = Record<string, unknown>

/** `public` or comma/space separated host:port, as in LLM_MESH_BOOTSTRAP and --bootstrap. */
export function parseBootstrapList(value: string): string | string[] {
  const v = value.trim()
  if (v === 'public') return 'public'
  return v.split(/[\s,]+/).filter(Boolean)
}

export function isLoopbackBootstrap(bootstrap: 'public' | HostPort[]): boolean {
  return bootstrap !== 'public' && bootstrap.every((b) => LOOPBACK.test(b.host))
}

/** Environment overrides, applied over the file and under explicit overrides. */
export function envOverrides(env: NodeJS.ProcessEnv, role: string): ConfigInput {
  const out: ConfigInput = {}
  if (env.LLM_MESH_BOOTSTRAP) out.bootstrap = parseBootstrapList(env.LLM_MESH_BOOTSTRAP)
  if (env.LLM_MESH_STORE) out.store = env.LLM_MESH_STORE
  if (env.LLM_MESH_MESH) out.mesh = env.LLM_MESH_MESH
  if (env.LLM_MESH_LOG_LEVEL) out.log = { level: env.LLM_MESH_LOG_LEVEL }
  if (role === 'processor') {
    const backend: ConfigInput = {}
    if (env.OLLAMA_HOST) backend.ollamaHost = normalizeOllamaHost(env.OLLAMA_HOST)
    if (env.LLM_MESH_MODELS) backend.modelsDir = env.LLM_MESH_MODELS
    if (Object.keys(backend).length) out.backend = backend
  }
  return out
}

/** OLLAMA_HOST may be `host`, `host:port` or a URL, as Ollama itself accepts. */
export function normalizeOllamaHost(value: string): string {
  const v = value.trim()
  if (/^https?:\/\//.test(v)) return v
  return `http://${v.includes(':') ? v : `${v}:11434`}`
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

export function deepMerge(...layers: ConfigInput[]): ConfigInput {
  const out: ConfigInput = {}
  for (const layer of layers) {
    for (const [k, v] of Object.entries(layer)) {
      if (v === undefined) continue
      const prev = out[k]
      out[k] = isPlainObject(prev) && isPlainObject(v) ? deepMerge(prev, v) : v
    }
  }
  return out
}

/** Reads `config/<role>.json` from `dir` if present. @throws ERR_BAD_CONFIG on unreadable JSON */
export function readConfigFile(path: string): ConfigInput {
  if (!existsSync(path)) return {}
  let parsed: unknown
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'))
  } catch (err) {
    throw MeshError.badConfig(`${path} is not valid JSON: ${(err as Error).message}`, { file: path })
  }
  if (!isPlainObject(parsed)) throw MeshError.badConfig(`${path} must hold a JSON object`, { file: path })
  return parsed
}

export interface LoadConfigOptions {
  /** Explicit file; default `<configDir>/<role>.json`. */
  file?: string
  configDir?: string
  env?: NodeJS.ProcessEnv
  overrides?: ConfigInput
}

/**
 * Validates a config. @throws ERR_BAD_CONFIG whose message names the field,
 * e.g. `config.net.port: Too big: expected number to be <=65535`.
 */
export function parseConfig<S extends z.ZodType>(schema: S, input: unknown, source = 'config'): z.output<S> {
  return validate(schema, input, source, 'ERR_BAD_CONFIG')
}

/** Validates any input against a schema. @throws `code` with every issue named by its path */
export function validate<S extends z.ZodType>(
  schema: S,
  input: unknown,
  source: string,
  code: 'ERR_BAD_CONFIG' | 'ERR_BAD_REQUEST',
): z.output<S> {
  const result = schema.safeParse(input)
  if (result.success) return result.data
  const issues = result.error.issues.map((i) => {
    const path = i.path.length ? `${source}.${i.path.join('.')}` : source
    return `${path}: ${i.message}`
  })
  throw new MeshError(code, issues.join('; '), { issues })
}

export function loadConfig<S extends z.ZodType>(
  schema: S,
  role: string,
  opts: LoadConfigOptions = {},
): z.output<S> {
  const { configDir = 'config', env = process.env, overrides = {} } = opts
  const file = opts.file ?? join(configDir, `${role}.json`)
  const merged = deepMerge(readConfigFile(file), envOverrides(env, role), overrides)
  return parseConfig(schema, merged)
}

export function resolvePath(base: string, p: string): string {
  return isAbsolute(p) ? p : resolve(base, p)
}
