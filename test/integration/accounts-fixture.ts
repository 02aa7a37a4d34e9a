/** What the account tests share. */
import type { MeshClient } from '../../workers/client/client.worker.js'
import { until } from '../helpers/mesh.js'

export async function waitForProcessors(client: MeshClient, n = 1): Promise<boolean> {
  return until(async () => (await client.status()).processors.length >= n)
}
