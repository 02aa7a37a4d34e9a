import type { ConfigInput } from '../../kernel/config.js'
import { int, str } from './common.js'

/** A serving worker's own `/metrics` endpoint (`metrics` config): the flags. */
export const METRICS_FLAGS = {
  'metrics-port': { type: 'string' },
  'metrics-host': { type: 'string' },
} as const

/** The config overrides of `--metrics-port N` (0: any free port) and `--metrics-host H`. */
export function metricsOverrides(values: Record<string, unknown>): ConfigInput {
  const metrics: ConfigInput = {}
  const port = int(values['metrics-port'] as string | undefined, 'metrics-port', 0, 65535)
  if (port !== undefined) metrics.port = port
  const host = str(values['metrics-host'] as string | undefined)
  if (host) metrics.host = host
  return Object.keys(metrics).length ? { metrics } : {}
}
