import { createWriteStream } from 'node:fs'
import { join } from 'node:path'
import type { ConfigInput } from '../../kernel/config.js'
import { MeshClient } from '../../workers/client/client.worker.js'
import { dataDir, type MeshFile, readMeshFile, runningMesh, str, workerOverrides } from './common.js'
import { type FlagValues, signIn } from './credentials.js'

/**
 * A signed-in client for commands that talk to a running mesh (chat, status,
 * user, key, usage): the mesh `up` runs from --data, or the one reached
 * through --bootstrap.
 */
export async function joinMesh(values: FlagValues): Promise<MeshClient> {
  const config: ConfigInput = { log: { level: str(values['log-level']) ?? 'warn' } }
  const dir = dataDir(values)
  let meshFile: MeshFile | null
  if (str(values.bootstrap)) {
    meshFile = readMeshFile(dir)
    Object.assign(config, workerOverrides(values))
  } else {
    meshFile = runningMesh(dir)
    Object.assign(config, { bootstrap: meshFile.bootstrap, mesh: meshFile.mesh, gateway: meshFile.gateway })
  }
  if (str(values.mesh)) config.mesh = str(values.mesh)
  const client = new MeshClient({
    config,
    logDestination: meshFile
      ? createWriteStream(join(dir, 'logs', 'chat.log'), { flags: 'a' })
      : process.stderr,
  })
  try {
    await client.ready()
    await signIn(client, values, dir)
  } catch (err) {
    await client.close()
    throw err
  }
  return client
}

/** Runs `fn` with a signed-in client of the mesh (as `joinMesh`), closed afterwards. */
export async function withMeshClient<T>(
  values: FlagValues,
  fn: (client: MeshClient) => Promise<T>,
): Promise<T> {
  const client = await joinMesh(values)
  try {
    return await fn(client)
  } finally {
    await client.close()
  }
}
