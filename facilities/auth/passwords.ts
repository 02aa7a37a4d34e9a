import { randomBytes, randomInt, scrypt as scryptCb, timingSafeEqual } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { z } from 'zod'
import type { AuthConfig } from '../../kernel/config.js'
import { validate } from '../../kernel/config.js'
import { MeshError } from '../../kernel/errors.js'
import type { Logger } from '../log.facility.js'

export const MIN_PASSWORD = 8
export const MAX_PASSWORD = 1024
const SALT_BYTES = 16
const HASH_BYTES = 32
/** scrypt runs on libuv's pool (4 threads); keep two for everything else. */
const MAX_CONCURRENT_SCRYPT = 2
/**
 * Hashes waiting for a slot; past it ERR_BUSY. Each is one real account's
 * check (unknown names never hash), so a flood cannot queue a real login
 * behind minutes of work.
 */
const MAX_SCRYPT_WAITING = 64
/** Recent durations of real password checks; an unknown name's answer waits one of them. */
const CHECK_TIME_SAMPLES = 32

/**
 * A password's length in code points: the one measure of every path (create,
 * reset, change, login), so a password accepted once is never refused later
 * for its length (an emoji is one character, not two UTF-16 units). Exact up
 * to MAX_PASSWORD; anything longer counts as MAX_PASSWORD + 1.
 */
export function passwordLength(password: string): number {
  let n = 0
  for (const _ of password) if (++n > MAX_PASSWORD) break
  return n
}

/** Whether `password` is worth checking against a hash: a string no longer than any stored one can be. */
export function checkable(password: unknown): password is string {
  return typeof password === 'string' && passwordLength(password) <= MAX_PASSWORD
}

const passwordSchema = z.string().superRefine((s, ctx) => {
  const n = passwordLength(s)
  if (n < MIN_PASSWORD) ctx.addIssue({ code: 'custom', message: `at least ${MIN_PASSWORD} characters` })
  if (n > MAX_PASSWORD) ctx.addIssue({ code: 'custom', message: `at most ${MAX_PASSWORD} characters` })
})

/** A new password, as given. @throws ERR_BAD_REQUEST naming `field` */
export function validPassword(input: unknown, field: string): string {
  return validate(passwordSchema, input, field, 'ERR_BAD_REQUEST')
}

function scrypt(password: string, salt: Buffer, N: number, r: number, p: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    // maxmem must cover 128 * N * r bytes, plus slack.
    scryptCb(password, salt, HASH_BYTES, { N, r, p, maxmem: 256 * N * r }, (err, key) =>
      err ? reject(err) : resolve(key),
    )
  })
}

/**
 * scrypt hashes (per-hash salt, cost stored with the hash), at most
 * MAX_CONCURRENT_SCRYPT at once, and checks of unknown names that take as long
 * as real ones without hashing.
 */
export class Passwords {
  private running = 0
  private readonly waiters: Array<() => void> = []
  /** Durations (ms) of recent real password checks, queue wait included, oldest first. */
  private readonly checkTimes: number[] = []
  /** One timed hash, for unknown names before any real check has been timed. */
  private calibration: Promise<void> | null = null

  constructor(
    private readonly cost: AuthConfig['scrypt'],
    private readonly log: Logger,
  ) {}

  private get queueFull(): boolean {
    return this.waiters.length >= MAX_SCRYPT_WAITING
  }

  /** @throws ERR_BUSY (MAX_SCRYPT_WAITING hashes already wait) */
  private async withSlot<T>(fn: () => Promise<T>): Promise<T> {
    if (this.running >= MAX_CONCURRENT_SCRYPT && this.queueFull) throw busy()
    while (this.running >= MAX_CONCURRENT_SCRYPT) {
      await new Promise<void>((resolve) => this.waiters.push(resolve))
    }
    this.running++
    try {
      return await fn()
    } finally {
      this.running--
      this.waiters.shift()?.()
    }
  }

  /** `scrypt$N$r$p$<salt b64>$<hash b64>` @throws ERR_BUSY */
  async hash(password: string): Promise<string> {
    const { N, r, p } = this.cost
    const salt = randomBytes(SALT_BYTES)
    const hash = await this.withSlot(() => scrypt(password, salt, N, r, p))
    return `scrypt$${N}$${r}$${p}$${salt.toString('base64')}$${hash.toString('base64')}`
  }

  /** @throws ERR_BUSY */
  async verify(password: string, stored: string): Promise<boolean> {
    const parts = stored.split('$')
    if (parts.length !== 6 || parts[0] !== 'scrypt') return false
    const [N, r, p] = parts.slice(1, 4).map(Number) as [number, number, number]
    const salt = Buffer.from(parts[4] as string, 'base64')
    const expected = Buffer.from(parts[5] as string, 'base64')
    const actual = await this.withSlot(() =>
      scrypt(password, salt, N, r, p).catch((err) => {
        // A damaged hash (bad N, r or p) matches nothing; say so in the log, not to the caller.
        this.log.error({ err }, 'stored password hash is unusable')
        return null
      }),
    )
    return actual !== null && actual.length === expected.length && timingSafeEqual(actual, expected)
  }

  /**
   * Checks `password` against an account's stored hash, or, for an unknown
   * name (no hash), fails after as long as a real check takes.
   * @throws ERR_BUSY (the hash queue is full, for every name alike)
   */
  async check(password: string, stored: string | undefined): Promise<boolean> {
    if (this.queueFull) throw busy()
    if (stored === undefined) return this.unknownNameDelay()
    const started = performance.now()
    const right = await this.verify(password, stored)
    this.recordCheckTime(performance.now() - started)
    return right
  }

  private recordCheckTime(ms: number): void {
    this.checkTimes.push(ms)
    if (this.checkTimes.length > CHECK_TIME_SAMPLES) this.checkTimes.shift()
  }

  /**
   * Waits as long as one of the recent real checks took, drawn at random: a
   * timer, no CPU and no place in the hash queue, so a flood of unknown names
   * costs nothing and timing still does not tell which names exist. Before any
   * real check, one hash is timed (once).
   */
  private async unknownNameDelay(): Promise<false> {
    if (this.checkTimes.length === 0) {
      this.calibration ??= (async () => {
        const started = performance.now()
        await this.hash(randomBytes(16).toString('hex'))
        this.recordCheckTime(performance.now() - started)
      })().catch(() => {
        this.calibration = null
      })
      await this.calibration
    }
    const ms = this.checkTimes.length ? (this.checkTimes[randomInt(this.checkTimes.length)] as number) : 0
    await sleep(ms)
    return false
  }
}

function busy(): MeshError {
  return new MeshError('ERR_BUSY', 'too many password checks at once; retry shortly', { retryAfterMs: 1000 })
}
