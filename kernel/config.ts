import { z } from 'zod'
import { authConfigSchema, keyLimitsSchema, userLimitsSchema } from './config-auth.js'
import { bootstrapSchema } from './config-bootstrap.js'
import { MeshError } from './errors.js'

export { authConfigSchema, keyLimitsSchema, userLimitsSchema } from './config-auth.js'

/** The routing strategies (facilities/router/strategies.ts implements them). */
export const STRATEGIES = ['least-loaded', 'fastest', 'round-robin', 'random-weighted'] as const

/**
 * What a worker's configuration may hold, and its validation, whose message names the bad
 * field. Where it is read from: config-load.ts; the DHT bootstrap: config-bootstrap.ts.
 */

/** A peer's public key in hex (either case). */
const publicKeyHex = z.string().regex(/^[0-9a-f]{64}$/i, '64 hex characters')

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
      /**
       * Hex public keys of blind relays (`llm-mesh bootstrap --relay` prints one): a peer that
       * hole-punching cannot reach is dialed through one of them. Invite tokens carry them.
       */
      relays: z.array(publicKeyHex).default([]),
    })
    .strict()
    .default({ requestTimeoutMs: 10_000, relays: [] }),
  log: z
    .object({ level: logLevel.default('info') })
    .strict()
    .default({ level: 'info' }),
  /**
   * How long a stopping worker waits for in-flight requests (a second SIGINT/SIGTERM stops at
   * once). Long enough for a long answer to finish; systemd waits 90 s before it kills.
   */
  drainTimeoutMs: z.number().int().nonnegative().default(60_000),
})

export const backendConfigSchema = z
  .object({
    type: z.enum(['auto', 'llamacpp', 'ollama', 'echo']).default('auto'),
    modelsDir: z.string().min(1).optional(),
    ollamaHost: z.string().url().default('http://127.0.0.1:11434'),
    threads: z.number().int().positive().default(1),
    gpu: z.union([z.literal(false), z.literal('auto')]).default(false),
    contextSize: z.number().int().min(128).default(2048),
    maxParallel: z.number().int().min(1).max(64).default(2),
    /** Write the tiny test model when no other model is found (`up` does; a bare processor does not). */
    tinyModelFallback: z.boolean().default(false),
    /**
     * Caps the rate this processor hands out tokens (per generation), and adds a
     * delay before the first: a slower machine, by configuration. For testing and
     * benchmarking meshes of unequal processors.
     */
    throttle: z
      .object({
        tokensPerSecond: z.number().positive().optional(),
        firstTokenDelayMs: z.number().min(0).default(0),
      })
      .strict()
      .optional(),
  })
  .strict()

/**
 * A worker's own `GET /metrics` port (Prometheus text format), loopback unless `host` says
 * otherwise; `port` null: none, 0: any free port.
 */
const metricsEndpointSchema = z
  .object({
    host: z.string().min(1).default('127.0.0.1'),
    port: z.number().int().min(0).max(65535).nullable().default(null),
  })
  .strict()
  .prefault({})

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
    /** Relative share of traffic under the random-weighted strategy (times capacity). */
    weight: z.number().min(0).default(1),
    /** Who may call this processor: gateways only, by key or by a shared mesh secret. */
    firewall: z
      .object({
        /** Hex public keys of gateways this processor serves. */
        trustedGateways: z.array(publicKeyHex).default([]),
        /** Gateways whose identity derives from this secret are admitted (see gateway `meshSecret`). */
        meshSecret: z.string().min(32, 'at least 32 characters').optional(),
        /** How many gateway identities a mesh secret admits (indices 0…n-1). */
        maxGateways: z.number().int().min(1).max(256).default(16),
        /** Serve any peer at all: only for a mesh whose every node is trusted. */
        allowAnyPeer: z.boolean().default(false),
      })
      .strict()
      .prefault({}),
    /**
     * An invite token (`llm-mesh invite`) to redeem with its gateways at start; they are
     * trusted like `firewall.trustedGateways`. The mesh and bootstrap must be the token's.
     */
    invite: z.string().min(1).optional(),
    /** Start drained for maintenance: up and reachable, taking no new work until `undrain`. */
    draining: z.boolean().default(false),
    /** Its own `GET /metrics`; without one, gateways still collect its series over RPC. */
    metrics: metricsEndpointSchema,
  })
  .strict()

/**
 * Placement: when requests for a model wait in the queue longer than `queueWaitMs` throughout
 * `windowMs`, the gateway loads it on an idle processor holding it (else copies it onto one),
 * at most once per `cooldownMs` per model, for `keepAliveMs` idle.
 */
export const placementConfigSchema = z
  .object({
    enabled: z.boolean().default(false),
    queueWaitMs: z.number().int().min(0).default(2_000),
    windowMs: z.number().int().min(0).default(10_000),
    cooldownMs: z.number().int().min(0).default(60_000),
    /** How long a model it loaded stays loaded idle (negative: until unloaded). */
    keepAliveMs: z
      .number()
      .int()
      .default(5 * 60_000),
    /** Copy the model onto a processor that does not hold it when no holder is idle. */
    copy: z.boolean().default(true),
    /** How often it looks at the queue. */
    intervalMs: z.number().int().min(50).max(60_000).default(500),
  })
  .strict()

export const gatewayConfigSchema = baseConfigSchema
  .extend({
    auth: authConfigSchema.prefault({}),
    limits: z
      .object({ user: userLimitsSchema.prefault({}), key: keyLimitsSchema.prefault({}) })
      .strict()
      .prefault({}),
    ledger: z
      .object({
        /** Most records in one group commit. */
        maxBatch: z.number().int().positive().default(4096),
      })
      .strict()
      .prefault({}),
    audit: z
      .object({
        /** Repeats of one failure (same action, actor, target, outcome) within this window are written as one summary entry. */
        failureWindowMs: z.number().int().min(100).default(60_000),
      })
      .strict()
      .prefault({}),
    maxPromptBytes: z
      .number()
      .int()
      .positive()
      .default(1024 * 1024),
    /** Longest a single generation may take end to end (a request may ask for less, never more). */
    inferenceTimeoutMs: z.number().int().positive().default(300_000),
    routing: z
      .object({
        strategy: z.enum(STRATEGIES).default('least-loaded'),
        /** Requests waiting for a free processor slot, in all; past it: ERR_BUSY. */
        maxQueue: z.number().int().min(0).default(1024),
        /** …and per user, so one user cannot fill the queue. */
        maxQueuePerUser: z.number().int().min(0).default(256),
        /** Processors tried for a request that fails before its first token. */
        maxAttempts: z.number().int().min(1).max(10).default(3),
        /** Backoff before a retry: base * 2^(attempt-1), capped, with full jitter. */
        retryBaseMs: z.number().int().min(0).default(50),
        retryMaxMs: z.number().int().min(0).default(1_000),
        /** No retry starts later than this after the request arrived. */
        retryBudgetMs: z.number().int().min(0).default(10_000),
        /** Processor-side failures in a row that open a processor's circuit breaker. */
        breakerFailures: z.number().int().min(1).default(3),
        /** How long an open breaker keeps a processor out before one probe request. */
        breakerCooldownMs: z.number().int().min(1).default(10_000),
        /**
         * An embedding request's inputs go to processors in batches of at most this many inputs
         * and bytes (an input larger than the bytes is a batch of its own), each taking a slot in
         * turn with other users' requests: a long list holds a slot for one batch at a time.
         */
        embedBatchInputs: z.number().int().min(1).max(2048).default(64),
        embedBatchBytes: z
          .number()
          .int()
          .min(1)
          .default(16 * 1024),
        /** A cold load's expected time where the processor never measured one (routing weighs it against queueing). */
        coldLoadMs: z.number().int().min(0).default(10_000),
      })
      .strict()
      .prefault({}),
    /** Placement that follows demand (workers/gateway/placement.ts); `llm-mesh up` turns it on. */
    placement: placementConfigSchema.prefault({}),
    /**
     * Derives this gateway's identity from a secret shared with processors
     * (`firewall.meshSecret` there), so they admit it without a key list.
     * `gatewayIndex` tells gateways of one mesh apart (0…`maxGateways`-1).
     */
    meshSecret: z.string().min(32, 'at least 32 characters').optional(),
    /**
     * Which processors this gateway uses. 'members': those in `trusted`, those that joined
     * with a live invite, and those proving `meshSecret`; 'any': whoever announces on the
     * mesh's topic. Default: 'any' on a loopback-only bootstrap, else 'members'.
     */
    processors: z
      .object({
        admission: z.enum(['any', 'members']).optional(),
        trusted: z.array(publicKeyHex).default([]),
      })
      .strict()
      .prefault({}),
    gatewayIndex: z.number().int().min(0).max(255).default(0),
    /**
     * A gateway invite token (`llm-mesh invite --role gateway`), redeemed at start with the
     * gateways it names: they vouch for this gateway to their processors and tell it which
     * processors are the mesh's members. The mesh and bootstrap must be the token's.
     */
    invite: z.string().min(1).optional(),
    /** A `GET /metrics` of its own (its series and its processors'), e.g. without `http`. */
    metrics: metricsEndpointSchema,
    /** Ollama- and OpenAI-compatible HTTP APIs. Off unless enabled; loopback unless `host` says otherwise. */
    http: z
      .object({
        enabled: z.boolean().default(false),
        host: z.string().min(1).default('127.0.0.1'),
        port: z.number().int().min(0).max(65535).default(11435),
        /** Request bodies above this are refused (413) before they are read. */
        maxBodyBytes: z
          .number()
          .int()
          .positive()
          .default(8 * 1024 * 1024),
        /** Open connections at most; one more is answered 503 (ERR_BUSY) and closed. */
        maxConnections: z.number().int().positive().default(1024),
        /**
         * `GET /metrics` (Prometheus text format), open without a key like `/api/version`: on a
         * gateway bound to a public interface, anyone who reaches the port can read it.
         */
        metrics: z.boolean().default(true),
        /**
         * Origins whose web pages may call the APIs from a browser (CORS), each
         * `scheme://host[:port]`, or `*` for any; none by default (browsers refuse cross-origin calls).
         */
        corsOrigins: z
          .array(
            z.string().regex(/^(\*|https?:\/\/[^/\s]+)$/, "an origin like 'https://app.example.com', or '*'"),
          )
          .default([]),
      })
      .strict()
      .prefault({}),
    /**
     * Request tracing: an id per request (the caller's `X-Request-Id`, a `traceparent`'s trace
     * id, or a new one) in every log line about it on the gateway and the processor, returned
     * with the answer with its per-hop timing (`X-LLM-Mesh-Timing`). Off: none of it.
     * `serverTiming`: the timing as `Server-Timing` too (browsers' developer tools show it),
     * off by default: a second header of ~130 bytes on every answer.
     */
    tracing: z
      .object({ enabled: z.boolean().default(true), serverTiming: z.boolean().default(false) })
      .strict()
      .prefault({}),
    /** Desired state (docs/operations.md): how often the gateway reconciles it, and copies at once. */
    models: z
      .object({
        reconcileMs: z.number().int().min(100).default(5_000),
        maxCopies: z.number().int().min(1).max(64).default(2),
      })
      .strict()
      .prefault({}),
    registry: z
      .object({
        lookupIntervalMs: z.number().int().positive().default(3_000),
        heartbeatIntervalMs: z.number().int().positive().default(1_000),
        /**
         * Heartbeats a second this gateway sends to processors that run none of its requests:
         * past `heartbeatIntervalMs` × this many processors, idle ones are beaten less often
         * (those running its requests still every `heartbeatIntervalMs`).
         */
        beatBudgetPerSecond: z.number().positive().default(100),
        heartbeatTimeoutMs: z.number().int().positive().default(1_500),
        /** Missed heartbeats (or a closed connection) before a processor counts as unreachable. */
        maxMissed: z.number().int().positive().default(2),
        /** How long a new connection to a processor may take to open, apart from the request on it. */
        connectTimeoutMs: z.number().int().positive().default(10_000),
        /**
         * Longest wait between re-dials of an unreachable processor (they back off up to it, for
         * `goneAfterMs` at most): also how late a restarted processor can be found once it is up.
         */
        redialMaxMs: z.number().int().positive().default(1_000),
        /** An unreachable processor is dropped after this long (its requests fail over). */
        goneAfterMs: z.number().int().positive().default(10_000),
      })
      .strict()
      .prefault({}),
  })
  .strict()

export const clientConfigSchema = baseConfigSchema
  .extend({
    /** Hex public key of a gateway to use instead of looking one up. */
    gateway: publicKeyHex.optional(),
    inferenceTimeoutMs: z.number().int().positive().default(300_000),
    /** Finding a gateway, at start and again when the connection to one dies. */
    reconnect: z
      .object({
        /** How long to keep looking (with backoff) before ERR_UNAVAILABLE names the gateways tried. */
        timeoutMs: z.number().int().positive().default(30_000),
        /** How long one dial may take to open, apart from the ping on it. */
        connectTimeoutMs: z.number().int().positive().default(5_000),
      })
      .strict()
      .prefault({}),
  })
  .strict()

export type BaseConfig = z.infer<typeof baseConfigSchema>
export type ProcessorConfig = z.infer<typeof processorConfigSchema>
export type GatewayConfig = z.infer<typeof gatewayConfigSchema>
export type ClientConfig = z.infer<typeof clientConfigSchema>
export type BackendConfig = z.infer<typeof backendConfigSchema>
export type PlacementConfig = z.infer<typeof placementConfigSchema>
export type AuthConfig = z.infer<typeof authConfigSchema>
export type UserLimits = z.infer<typeof userLimitsSchema>
export type KeyLimits = z.infer<typeof keyLimitsSchema>

export type ConfigInput = Record<string, unknown>

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
