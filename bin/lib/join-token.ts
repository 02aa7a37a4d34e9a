import { existsSync, readFileSync } from 'node:fs'
import { chmod, mkdir, rename, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import type { ConfigInput } from '../../kernel/config.js'
import { deepMerge } from '../../kernel/config-load.js'
import { MeshError } from '../../kernel/errors.js'
import { decodeInvite, type InviteRole } from '../../kernel/invite.js'
import { isRecord } from '../../kernel/util.js'
import { dataDir, str } from './common.js'
import type { FlagValues } from './credentials.js'

/**
 * `llm-mesh processor --join TOKEN` and `llm-mesh gateway --join TOKEN`: the whole setup of a
 * new machine. The token names the mesh, its DHT bootstrap and the gateways to join; the worker
 * keeps its identity in DATA/<role> (or --store) and the join in DATA/join.json (mode 0600: the
 * token is a credential), so the same command, or `llm-mesh <role> --data DATA`, starts it again.
 */

export const JOIN_FILE = 'join.json'

interface JoinFile {
  token: string
  store: string
  /** The flags' config overrides of the command that joined (backend, …), kept for restarts. */
  overrides: ConfigInput
  savedAt: string
}

function readJoinFile(path: string): JoinFile {
  let parsed: unknown
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'))
  } catch {
    throw MeshError.badConfig(`${path} is not valid JSON`)
  }
  if (!isRecord(parsed) || typeof parsed.token !== 'string' || typeof parsed.store !== 'string')
    throw MeshError.badConfig(`${path}: expected { token, store, overrides }`)
  return {
    token: parsed.token,
    store: parsed.store,
    overrides: isRecord(parsed.overrides) ? parsed.overrides : {},
    savedAt: String(parsed.savedAt ?? ''),
  }
}

async function writeJoinFile(path: string, file: JoinFile): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`
  await writeFile(tmp, `${JSON.stringify(file, null, 2)}\n`, { mode: 0o600 })
  await chmod(tmp, 0o600)
  await rename(tmp, path)
}

export interface InviteJoin {
  /** Config overrides: the token's mesh, bootstrap and invite, the store, then the flags. */
  overrides: ConfigInput
  /** Saves the join for restarts; call once the worker serves. */
  save(): Promise<void>
}

/**
 * The join a `role` command runs with: --join TOKEN, or the one saved in --data DATA.
 * Null when there is neither (a worker configured by hand, or joining `up`'s mesh).
 * `flags`: the config overrides of the command's other flags; they win over the token's.
 * @throws ERR_INVITE_INVALID (a malformed token, or one for another role), ERR_BAD_CONFIG
 */
export function inviteJoin(role: InviteRole, values: FlagValues, flags: ConfigInput): InviteJoin | null {
  const dir = dataDir(values)
  // One file per role: a processor and a gateway joined from the same DATA keep their own.
  const path = join(dir, role === 'processor' ? JOIN_FILE : `join-${role}.json`)
  // LLM_MESH_JOIN keeps the token out of the process list (`ps` shows a --join value).
  const given = str(values.join) ?? (process.env.LLM_MESH_JOIN || undefined)
  const saved = given ? null : values.data !== undefined && existsSync(path) ? readJoinFile(path) : null
  const token = given ?? saved?.token
  if (!token) return null
  const invite = decodeInvite(token)
  if (invite.role !== role)
    throw new MeshError('ERR_INVITE_INVALID', `this invite is for a ${invite.role}, not a ${role}`)
  const store = str(values.store) ? resolve(str(values.store) as string) : (saved?.store ?? join(dir, role))
  const kept = deepMerge(saved?.overrides ?? {}, flags)
  return {
    overrides: deepMerge(
      { mesh: invite.mesh, bootstrap: invite.bootstrap, invite: token, store },
      invite.relays ? { net: { relays: invite.relays } } : {},
      kept,
    ),
    save: async () => {
      await mkdir(dir, { recursive: true })
      await writeJoinFile(path, { token, store, overrides: kept, savedAt: new Date().toISOString() })
    },
  }
}
