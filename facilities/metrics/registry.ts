import { collectDefaultMetrics, Registry } from 'prom-client'

/** Every series this project exports starts with this. */
export const METRIC_PREFIX = 'llm_mesh_'

/**
 * prom-client's default gauges named `_total`, which `promtool check metrics` refuses (only
 * counters end in `_total`). Each is the sum of its per-type gauge without the suffix
 * (`llm_mesh_nodejs_active_handles{type}` …), so dropping them loses nothing.
 */
const TOTAL_GAUGES = [
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
]

/**
 * A worker's own metrics registry (never prom-client's global one: two workers in one process,
 * as in tests, keep their series apart), with the process's default metrics under the prefix.
 */
export function createMetricsRegistry(): Registry {
  const register = new Registry()
  collectDefaultMetrics({ register, prefix: METRIC_PREFIX })
  for (const name of TOTAL_GAUGES) register.removeSingleMetric(METRIC_PREFIX + name)
  return register
}
