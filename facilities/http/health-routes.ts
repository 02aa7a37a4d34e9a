import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Health } from '../../kernel/wire.js'
import { methodOf, sendJson } from './plumbing.js'

/** The probes' paths: open (no key), answered even while the worker stops. */
export const PROBE_PATHS: ReadonlySet<string> = new Set(['/healthz', '/readyz'])

/**
 * `GET /healthz`: 200 while the process answers (liveness: a failing probe means restart it).
 * `GET /readyz`: 200 when the worker is ready for new work, else 503 (readiness: a failing
 * probe means send it nothing new), both with the health as JSON: its checks and whether it
 * drains. Never cached.
 */
export async function serveProbe(
  path: string,
  req: IncomingMessage,
  res: ServerResponse,
  health: () => Promise<Health>,
): Promise<void> {
  const method = methodOf(req)
  if (method !== 'GET' && method !== 'HEAD') {
    return sendJson(res, 405, { error: 'method not allowed' }, { Allow: 'GET, HEAD' })
  }
  const h = await health()
  const status = path === '/readyz' && !h.ready ? 503 : 200
  const body =
    path === '/healthz'
      ? { status: 'alive', role: h.role }
      : { status: h.ready ? 'ready' : 'not ready', ...h }
  sendJson(res, status, body, { 'Cache-Control': 'no-store' })
}
