/** What the auth facility's tests share: an open facility on a temporary store, and token helpers. */
import { createHash } from 'node:crypto'
import type { Test } from 'brittle'
import type { z } from 'zod'
import { AuthFacility } from '../../../facilities/auth/auth.facility.js'
import { LogFacility } from '../../../facilities/log.facility.js'
import { StoreFacility } from '../../../facilities/store.facility.js'
import { authConfigSchema } from '../../../kernel/config.js'
import { thrown } from '../../helpers/assert.js'

export const logger = new LogFacility({ level: 'silent' }).logger
export const SECRET = 'test-secret-0123456789abcdef-0123456789abcdef'
export const DAY_MS = 86_400_000

type AuthInput = z.input<typeof authConfigSchema>

export interface Opened {
  dir: string
  store: StoreFacility
  auth: AuthFacility
  /** Closes auth, then its store. */
  close(): Promise<void>
}

export async function openAuth(t: Test, opts: { dir?: string; config?: AuthInput } = {}): Promise<Opened> {
  const dir = opts.dir ?? (await t.tmp())
  const config = authConfigSchema.parse({ scrypt: { N: 1024 }, ...opts.config })
  const store = new StoreFacility({ dir })
  await store.ready()
  const auth = new AuthFacility({ store, config, logger })
  await auth.ready()
  const close = async () => {
    await auth.close()
    await store.close()
  }
  t.teardown(close)
  return { dir, store, auth, close }
}

export const codeOf = (fn: () => unknown) => thrown(fn)?.code ?? null

export const b64url = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url')
export const sha256hex = (s: string) => createHash('sha256').update(s).digest('hex')
/** `<prefix>_<id>_<secret>` (the secret is base64url, so it may itself hold '_'). */
export function opaque(token: string): { id: string; secret: string } {
  const m = /^lm[kr]_([0-9a-f]{16})_([A-Za-z0-9_-]{32})$/.exec(token)
  if (!m) throw new Error(`not an opaque token: ${token}`)
  return { id: m[1] as string, secret: m[2] as string }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** The claims of the access tokens the facility issues, for a user. */
export function claimsOf(
  userId: string,
  name: string,
  over: Record<string, unknown> = {},
): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000)
  return {
    name,
    role: 'user',
    ver: 0,
    typ: 'access',
    sub: userId,
    jti: 'feedfacefeedface',
    iss: 'llm-mesh',
    aud: 'llm-mesh',
    iat: now,
    exp: now + 600,
    ...over,
  }
}
