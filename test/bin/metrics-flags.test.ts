import test from 'brittle'
import { metricsOverrides } from '../../bin/lib/metrics-flags.js'
import { parseConfig, processorConfigSchema } from '../../kernel/config.js'

test('processor metrics config: off by default, on loopback when a port is given', (t) => {
  const base = { bootstrap: ['127.0.0.1:1'] }
  t.alike(parseConfig(processorConfigSchema, base).metrics, { host: '127.0.0.1', port: null }, 'no endpoint')
  t.alike(
    parseConfig(processorConfigSchema, { ...base, ...metricsOverrides({ 'metrics-port': '0' }) }).metrics,
    { host: '127.0.0.1', port: 0 },
    '--metrics-port 0: any free port, loopback',
  )
  t.alike(
    metricsOverrides({ 'metrics-port': '9464', 'metrics-host': '0.0.0.0' }),
    { metrics: { port: 9464, host: '0.0.0.0' } },
    'both flags',
  )
  t.alike(metricsOverrides({}), {}, 'no flag: nothing overridden')
  t.exception(
    () => metricsOverrides({ 'metrics-port': 'abc' }),
    /ERR_BAD_REQUEST: --metrics-port/,
    'a bad port flag',
  )
  t.exception(
    () => metricsOverrides({ 'metrics-port': '70000' }),
    /ERR_BAD_REQUEST: --metrics-port/,
    'out of range',
  )
  t.exception(
    () => parseConfig(processorConfigSchema, { ...base, metrics: { port: -1 } }),
    /ERR_BAD_CONFIG: config\.metrics\.port/,
    'a bad port in the config names the field',
  )
  t.exception(
    () => parseConfig(processorConfigSchema, { ...base, metrics: { port: 1, path: '/x' } }),
    /ERR_BAD_CONFIG: config\.metrics/,
    'an unknown field',
  )
})
