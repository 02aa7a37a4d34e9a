import type Hyperbee from 'hyperbee'
import { z } from 'zod'
import type { PublicUser, Role } from '../../kernel/accounts.js'
import type { UserLimits } from '../../kernel/config.js'
import { validate } from '../../kernel/config.js'
import { MeshError } from '../../kernel/errors.js'
import type { Serial } from '../lib/serial.js'
import type { Logger } from '../log.facility.js'
import { userLimitOverridesSchema } from './limit-overrides.js'
import { newId } from './opaque-token.js'
import type { Passwords } from './passwords.js'
import { validPassword } from './passwords.js'

export interface UserRecord {
  id: string
  username: string
  role: Role
  passwordHash: string
  /** Overrides of the configured defaults; a null value means no limit. */
  limits: Partial<UserLimits>
  disabled: boolean
  /** Bumped on password change and disable: every token issued before stops working. */
  tokenVersion: number
  createdAt: string
  updatedAt: string
}

export const USERNAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$/
const usernameSchema = z
  .string()
  .regex(USERNAME_RE, '1-64 letters, digits, . _ - (starting with a letter or digit)')
  .transform((s) => s.toLowerCase())

export const nowIso = () => new Date().toISOString()

export function publicUser(u: UserRecord): PublicUser {
  return {
    id: u.id,
    username: u.username,
    role: u.role,
    limits: u.limits,
    disabled: u.disabled,
    createdAt: u.createdAt,
  }
}

export interface UsersOptions {
  db: () => Hyperbee
  passwords: Passwords
  serial: Serial
  log: Logger
}

/** User records (`users/<name>` in the auth bee), all held in memory by name and by id. */
export class Users {
  private readonly byName = new Map<string, UserRecord>()
  private readonly byId = new Map<string, UserRecord>()

  constructor(private readonly opts: UsersOptions) {}

  async load(bee: Hyperbee): Promise<void> {
    for await (const { value } of bee.createReadStream<UserRecord>({ gte: 'users/', lt: 'users0' })) {
      this.byName.set(value.username, value)
      this.byId.set(value.id, value)
    }
  }

  get count(): number {
    return this.byName.size
  }

  get(username: string): UserRecord | undefined {
    return this.byName.get(String(username).toLowerCase())
  }

  getById(id: string): UserRecord | undefined {
    return this.byId.get(id)
  }

  list(): PublicUser[] {
    return [...this.byName.values()].map(publicUser).sort((a, b) => a.username.localeCompare(b.username))
  }

  private async save(u: UserRecord): Promise<void> {
    await this.opts.db().put(`users/${u.username}`, u)
    this.byName.set(u.username, u)
    this.byId.set(u.id, u)
  }

  /** @throws ERR_NOT_FOUND */
  require(username: string): UserRecord {
    const u = this.get(username)
    if (!u) throw new MeshError('ERR_NOT_FOUND', `no user '${username}'`, { username })
    return u
  }

  /** @throws ERR_BAD_REQUEST (bad name, password or limits), ERR_CONFLICT (name taken), ERR_BUSY */
  async create(input: {
    username: unknown
    password: unknown
    role?: Role
    limits?: unknown
  }): Promise<PublicUser> {
    const username = validate(usernameSchema, input.username, 'username', 'ERR_BAD_REQUEST')
    const password = validPassword(input.password, 'password')
    const limits = validate(userLimitOverridesSchema, input.limits ?? {}, 'limits', 'ERR_BAD_REQUEST')
    const role = input.role ?? 'user'
    const passwordHash = await this.opts.passwords.hash(password)
    return this.opts.serial.run(async () => {
      if (this.byName.has(username)) {
        throw new MeshError('ERR_CONFLICT', `user '${username}' already exists`, { username })
      }
      const at = nowIso()
      const u: UserRecord = {
        id: newId(),
        username,
        role,
        passwordHash,
        limits,
        disabled: false,
        tokenVersion: 0,
        createdAt: at,
        updatedAt: at,
      }
      await this.save(u)
      this.opts.log.info({ user: username, role }, 'user created')
      return publicUser(u)
    })
  }

  /**
   * Admin changes: role, limit overrides (null removes a limit, an absent field
   * keeps the default), disabled. Disabling ends every token and key at once.
   * @throws ERR_NOT_FOUND, ERR_BAD_REQUEST
   */
  async update(
    username: string,
    changes: { role?: Role; limits?: unknown; disabled?: boolean; resetLimits?: boolean },
  ): Promise<PublicUser> {
    const limits =
      changes.limits === undefined
        ? undefined
        : validate(userLimitOverridesSchema, changes.limits, 'limits', 'ERR_BAD_REQUEST')
    return this.opts.serial.run(async () => {
      const u = this.require(username)
      const next: UserRecord = { ...u, updatedAt: nowIso() }
      if (changes.role) next.role = changes.role
      if (changes.resetLimits) next.limits = {}
      if (limits) next.limits = { ...next.limits, ...limits }
      if (changes.disabled !== undefined) next.disabled = changes.disabled
      // A disabled user or a changed role: tokens issued before say something no longer true.
      if (next.disabled !== u.disabled || next.role !== u.role) next.tokenVersion = u.tokenVersion + 1
      await this.save(next)
      this.opts.log.info({ user: u.username, changes: { ...changes, limits } }, 'user updated')
      return publicUser(next)
    })
  }

  /** Stores a new password hash and ends the user's sessions (a new token version). @throws ERR_NOT_FOUND, ERR_BUSY */
  async replacePassword(username: string, password: string): Promise<void> {
    const passwordHash = await this.opts.passwords.hash(password)
    await this.opts.serial.run(async () => {
      const latest = this.require(username)
      await this.save({ ...latest, passwordHash, tokenVersion: latest.tokenVersion + 1, updatedAt: nowIso() })
    })
  }
}
