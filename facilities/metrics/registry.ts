import { collectDefaultMetrics, Registry } from 'prom-client'

/** Every series this project exports starts with this. */
export const METRIC_PREFIX = 'llm_mesh_'

/**
 * A worker's own metrics registry (never prom-client's global one: two workers in one process,
 * as in tests, keep their series apart), with the process's default metrics under the prefix.
 */
export function createMetricsRegistry(): Registry {
  const register = new Registry()
  collectDefaultMetrics({ register, prefix: METRIC_PREFIX })
  return register
}
