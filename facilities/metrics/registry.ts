import { collectDefaultMetrics, Registry } from 'prom-client'

/** Every series this project exports starts with this. */
export const METRIC_PREFIX = 'llm_mesh_'

/**
 * Default series that are gauges named like counters (`_total`), which `promtool check metrics`
 * refuses; each is the sum of its series by type without the suffix (`…_active_handles{type}`).
 */
const GAUGES_NAMED_TOTAL = ['active_handles_total', 'active_requests_total', 'active_resources_total']

/**
 * A worker's own metrics registry (never prom-client's global one: two workers in one process,
 * as in tests, keep their series apart), with the process's default metrics under the prefix.
 */
export function createMetricsRegistry(): Registry {
  const register = new Registry()
  collectDefaultMetrics({ register, prefix: METRIC_PREFIX })
  for (const name of GAUGES_NAMED_TOTAL) register.removeSingleMetric(`${METRIC_PREFIX}nodejs_${name}`)
  return register
}
