import { z } from 'zod'

/** A limit a user or key overrides: a positive whole number, or null for no limit. */
const limitValue = z.number().int().positive().nullable()

/** What an admin may override of a user's configured limits. */
export const userLimitOverridesSchema = z
  .object({
    rpm: limitValue.optional(),
    tpm: limitValue.optional(),
    dailyTokens: limitValue.optional(),
    monthlyTokens: limitValue.optional(),
  })
  .strict()

/** The limits an API key may have of its own. */
export const keyLimitOverridesSchema = z
  .object({ rpm: limitValue.optional(), tpm: limitValue.optional() })
  .strict()
