/** What the gateway's account methods take and return: users, keys, tokens, limits and usage. */
import type { KeyLimits, UserLimits } from './config.js'

export type Role = 'admin' | 'user'

export interface PublicUser {
  id: string
  username: string
  role: Role
  limits: Partial<UserLimits>
  disabled: boolean
  createdAt: string
}

export interface PublicKey {
  id: string
  userId: string
  name: string
  prefix: string
  createdAt: string
  expiresAt: string | null
  models: string[] | null
  limits: Partial<KeyLimits>
  revokedAt: string | null
}

export interface TokenPair {
  tokenType: 'Bearer'
  accessToken: string
  /** Seconds the access token lives. */
  expiresIn: number
  refreshToken: string
  refreshExpiresIn: number
  user: PublicUser
}

export type LimitName = 'rpm' | 'tpm' | 'dailyTokens' | 'monthlyTokens'

export interface LimitState {
  limit: number | null
  used: number
  remaining: number | null
  /** When the used amount falls (window) or resets (quota), ms from now; 0 if nothing is used. */
  resetMs: number
}

export type UsageStatus = 'ok' | 'error' | 'cancelled'

export interface UsageRecord {
  /** Request id: unique per request. */
  id: string
  /** When the request ended, ms since the epoch. */
  ts: number
  userId: string
  keyId: string | null
  model: string
  processor: string | null
  promptTokens: number
  completionTokens: number
  /** Gateway-side latency, ms. */
  ms: number
  status: UsageStatus
  /** Error code when status is not ok. */
  code?: string
}

export interface UsageCounter {
  requests: number
  errors: number
  promptTokens: number
  completionTokens: number
}

export interface UsageRow extends UsageCounter {
  day: string
  model: string
}

export interface UsageSummary {
  userId: string
  from: string
  to: string
  rows: UsageRow[]
  total: UsageCounter
}
