import { existsSync, readFileSync } from 'node:fs'
import { chmod, rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { MeshError } from '../../kernel/errors.js'
import type { MeshClient } from '../../workers/client/client.worker.js'

/**
 * How CLI commands prove who they are to a gateway: an API key (`--api-key`
 * or LLM_MESH_API_KEY), a user and password (`--login`, password from
 * LLM_MESH_PASSWORD or a hidden prompt), or, on the machine where `llm-mesh up`
 * runs, the local operator key `up` keeps in its data folder (an admin API key,
 * file mode 0600, revoked when `up` stops or starts again).
 */

export const OPERATOR_KEY_FILE = 'operator.key'

export async function writeOperatorKey(dir: string, key: string): Promise<void> {
  const path = join(dir, OPERATOR_KEY_FILE)
  const tmp = `${path}.${process.pid}.tmp`
  await writeFile(tmp, `${key}\n`, { mode: 0o600 })
  await chmod(tmp, 0o600)
  await rename(tmp, path)
}

export function readOperatorKey(dir: string): string | null {
  const path = join(dir, OPERATOR_KEY_FILE)
  if (!existsSync(path)) return null
  const key = readFileSync(path, 'utf8').trim()
  return key || null
}

export async function removeOperatorKey(dir: string): Promise<void> {
  await rm(join(dir, OPERATOR_KEY_FILE), { force: true })
}

/** The id part of an API key (`lmk_<id>_<secret>`). */
export function keyIdOf(key: string): string | null {
  return /^lmk_([0-9a-f]{16})_/.exec(key)?.[1] ?? null
}

/** Reads a line without echoing it on a terminal (a password). */
export function askHidden(question: string): Promise<string> {
  const input = process.stdin
  const output = process.stderr
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input, output, terminal: input.isTTY === true })
    if (input.isTTY) {
      // readline echoes what is typed through _writeToOutput: show the question only.
      const writable = rl as unknown as { _writeToOutput: (s: string) => void }
      let asked = false
      writable._writeToOutput = (s: string) => {
        if (!asked) {
          asked = true
          output.write(s)
        }
      }
    }
    rl.question(question, (answer) => {
      rl.close()
      if (input.isTTY) output.write('\n')
      resolve(answer)
    })
    rl.once('close', () => reject(new MeshError('ERR_CANCELLED', 'no password given')))
  })
}

export type FlagValues = Record<string, string | boolean | undefined>

/** Flags for choosing a credential, shared by every command that talks to a gateway. */
export const CREDENTIAL_FLAGS = {
  'api-key': { type: 'string' },
  login: { type: 'string' },
} as const

/**
 * Gives the client a credential, first found of: --api-key, LLM_MESH_API_KEY,
 * --login/--user (+ LLM_MESH_PASSWORD or a prompt), the operator key in `dataDir`.
 * @throws ERR_AUTH_REQUIRED naming the ways to log in; the gateway's ERR_AUTH_INVALID
 */
export async function signIn(
  client: MeshClient,
  values: FlagValues,
  dataDir: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<string> {
  const apiKey = typeof values['api-key'] === 'string' ? values['api-key'] : env.LLM_MESH_API_KEY
  if (apiKey) {
    client.useApiKey(apiKey)
    return 'API key'
  }
  // `chat` and `status` also take --user; `key` and `usage` use --user for whose keys or usage.
  const loginFlag = values.login ?? values.user
  const user = typeof loginFlag === 'string' ? loginFlag : undefined
  if (user) {
    const password = env.LLM_MESH_PASSWORD ?? (await askHidden(`password for ${user}: `))
    await client.login(user, password)
    return `user ${user}`
  }
  const operator = readOperatorKey(dataDir)
  if (operator) {
    client.useApiKey(operator)
    return 'local operator (admin)'
  }
  throw new MeshError(
    'ERR_AUTH_REQUIRED',
    'no credential: pass --api-key KEY (or set LLM_MESH_API_KEY), or --login NAME, or run where `llm-mesh up` keeps its --data folder',
  )
}
