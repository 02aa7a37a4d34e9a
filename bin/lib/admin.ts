import { randomBytes } from 'node:crypto'
import type { AuditRecorder } from '../../facilities/audit/audit-log.js'
import type { AuthFacility } from '../../facilities/auth/auth.facility.js'

/** The admin user `up` and a standalone gateway's first start create. */
export const ADMIN_USER = 'admin'
/** Where a standalone gateway's first start takes the admin's password from (else one is made). */
export const ADMIN_PASSWORD_ENV = 'LLM_MESH_ADMIN_PASSWORD'

/**
 * Creates the admin user `admin`: with `password` when given (not printed), else with a
 * generated one printed once on stdout.
 * @throws ERR_BAD_REQUEST (a given password too short), ERR_CONFLICT (the user exists)
 */
export async function createAdmin(
  auth: AuthFacility,
  password?: string,
  audit?: AuditRecorder,
): Promise<void> {
  const pw = password ?? randomBytes(12).toString('base64url')
  const admin = await auth.createUser({ username: ADMIN_USER, password: pw, role: 'admin' })
  const details = { username: ADMIN_USER, role: 'admin' }
  await audit?.record({ action: 'user.create', actor: 'system', target: admin.id, details })
  if (!password) process.stdout.write(`admin user '${ADMIN_USER}' created; password (shown once): ${pw}\n`)
}

/**
 * The first start of a gateway with accounts and no users at all: creates `admin` (password
 * from LLM_MESH_ADMIN_PASSWORD, else generated and printed once). Later starts find a user
 * and do nothing. Returns whether it created the admin (recorded in `audit`, actor `system`).
 */
export async function firstAdmin(
  auth: AuthFacility | null,
  env: NodeJS.ProcessEnv = process.env,
  audit?: AuditRecorder,
): Promise<boolean> {
  if (!auth || auth.userCount > 0) return false
  const password = env[ADMIN_PASSWORD_ENV] || undefined
  await createAdmin(auth, password, audit)
  if (password)
    process.stdout.write(`admin user '${ADMIN_USER}' created with the password from ${ADMIN_PASSWORD_ENV}\n`)
  return true
}
