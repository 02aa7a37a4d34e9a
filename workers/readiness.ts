/**
 * The checks behind each role's readiness (`/readyz`, RPC `health`): small functions over what
 * the worker already holds, so a probe costs no request through the mesh.
 */
import type { StoreFacility } from '../facilities/store.facility.js'
import { MeshError } from '../kernel/errors.js'
import type { HealthCheck, ProcessorView } from '../kernel/wire.js'

/** How long a processor's backend has to list its models before it counts as not answering. */
export const BACKEND_CHECK_TIMEOUT_MS = 2_000

/** The store is open (accounts, the ledger, invites and the identity live in it). */
export function storeCheck(store: StoreFacility): HealthCheck {
  const ok = store.opened && !store.closing
  return { name: 'store', ok, detail: ok ? store.dir : `store ${store.dir} is not open` }
}

/** At least one processor serving: answering, not draining, its breaker not open. */
export function processorsCheck(views: ProcessorView[] | null): HealthCheck {
  if (views === null) return { name: 'processors', ok: false, detail: 'the router is not open' }
  const healthy = views.filter((p) => p.state === 'serving' && p.breaker !== 'open').length
  return {
    name: 'processors',
    ok: healthy > 0,
    detail: `${healthy} of ${views.length} processor${views.length === 1 ? '' : 's'} serving`,
  }
}

/** The backend answers: it lists its models within `timeoutMs`. */
export async function backendCheck(
  list: () => Promise<unknown[]>,
  timeoutMs = BACKEND_CHECK_TIMEOUT_MS,
): Promise<HealthCheck> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new MeshError('ERR_TIMEOUT', `the backend did not answer within ${timeoutMs} ms`)),
      timeoutMs,
    )
  })
  try {
    const models = await Promise.race([list(), late])
    return { name: 'backend', ok: true, detail: `${models.length} model${models.length === 1 ? '' : 's'}` }
  } catch (err) {
    return { name: 'backend', ok: false, detail: MeshError.from(err).message }
  } finally {
    clearTimeout(timer)
  }
}
