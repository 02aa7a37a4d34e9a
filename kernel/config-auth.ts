import { z } from 'zod'

/** The gateway's accounts: users, keys, tokens, limits (the `auth` section of its config). */

/** A limit: a positive integer, or null for none. */
const limit = z.number().int().positive().nullable()

/** Per-user limits; an admin can override any of them per user. */
export const userLimitsSchema = z
  .object({
    /** Requests per minute (sliding 60 s window). */
    rpm: limit.default(600),
    /** Prompt + completion tokens per minute (sliding 60 s window). */
    tpm: limit.default(1_000_000),
    /** Prompt + completion tokens per UTC day. */
    dailyTokens: limit.default(null),
    /** Prompt + completion tokens per UTC month. */
    monthlyTokens: limit.default(null),
  })
  .strict()

/** Per-API-key limits, on top of the owner's; a key may set its own at creation. */
export const keyLimitsSchema = z
  .object({
    rpm: limit.default(null),
    tpm: limit.default(null),
  })
  .strict()

export const authConfigSchema = z
  .object({
    /**
     * false: no accounts at all; every request is forwarded without identity,
     * limits or ledger. Only for a private mesh whose every peer is trusted.
     */
    enabled: z.boolean().default(true),
    /** 'admin': only admins create users; 'open': anyone may register. */
    registration: z.enum(['admin', 'open']).default('admin'),
    /** HS256 secret (>= 32 bytes); generated and kept in the gateway's store when absent. */
    jwtSecret: z.string().min(32, 'at least 32 characters').optional(),
    issuer: z.string().min(1).default('llm-mesh'),
    audience: z.string().min(1).default('llm-mesh'),
    accessTtlSec: z.number().int().min(10).max(86_400).default(900),
    refreshTtlSec: z
      .number()
      .int()
      .min(60)
      .default(30 * 86_400),
    /** scrypt cost of new password hashes (N, a power of two; r; p). Stored with each hash. */
    scrypt: z
      .object({
        N: z
          .number()
          .int()
          .min(1024)
          .max(2 ** 20)
          .refine((n) => (n & (n - 1)) === 0, 'a power of two')
          .default(2 ** 15),
        r: z.number().int().min(1).max(32).default(8),
        p: z.number().int().min(1).max(16).default(1),
      })
      .strict()
      .prefault({}),
    /**
     * Failed logins on one account from one source (the caller's RPC key) within
     * `lockMs` before that source is refused for that account; and failures
     * on one account from all sources before its checks are spaced out
     * (`accountBackoffMs`). The owner's right password from another source is
     * never refused by a stranger's failures, only spaced.
     */
    maxFailuresPerAccount: z.number().int().positive().default(5),
    /** Failed logins from one source (the caller's RPC key) within `lockMs`, all accounts, before it is refused. */
    maxFailuresPerPeer: z.number().int().positive().default(20),
    /** Spacing of an account's checks once it has `maxFailuresPerAccount` failures; doubles per further failure. */
    accountBackoffMs: z.number().int().positive().default(250),
    /** Most spacing; a check whose turn is further away is refused (`ERR_RATE_LIMITED`, `retryAfterMs`). */
    maxAccountBackoffMs: z.number().int().positive().default(30_000),
    lockMs: z
      .number()
      .int()
      .positive()
      .default(15 * 60_000),
    /** Verified access tokens and API keys kept in memory. */
    cacheSize: z.number().int().positive().default(10_000),
  })
  .strict()
