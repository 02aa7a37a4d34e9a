import test from 'brittle'
import { Counter, Histogram, Registry } from 'prom-client'
import { exposeLabelled, type MetricFamily } from '../../../facilities/metrics/exposition.js'

async function familiesOf(build: (register: Registry) => void): Promise<MetricFamily[]> {
  const register = new Registry()
  build(register)
  return (await register.getMetricsAsJSON()) as unknown as MetricFamily[]
}

test('exposition: one HELP and TYPE per family, every sample labelled by its source', async (t) => {
  const make = (n: number) =>
    familiesOf((register) => {
      const c = new Counter({
        name: 'x_total',
        help: 'a "help" with \\ and\na newline',
        labelNames: ['code'],
        registers: [register],
      })
      c.labels('ok').inc(n)
      const h = new Histogram({ name: 'x_seconds', help: 'h', buckets: [1], registers: [register] })
      h.observe(n)
    })
  const text = exposeLabelled('processor', [
    { value: 'aaaa', families: await make(1) },
    { value: 'bb"b', families: await make(2) },
  ])
  t.is(
    text,
    [
      '# HELP x_total a "help" with \\\\ and\\na newline',
      '# TYPE x_total counter',
      'x_total{processor="aaaa",code="ok"} 1',
      'x_total{processor="bb\\"b",code="ok"} 2',
      '# HELP x_seconds h',
      '# TYPE x_seconds histogram',
      'x_seconds_bucket{processor="aaaa",le="1"} 1',
      'x_seconds_bucket{processor="aaaa",le="+Inf"} 1',
      'x_seconds_sum{processor="aaaa"} 1',
      'x_seconds_count{processor="aaaa"} 1',
      'x_seconds_bucket{processor="bb\\"b",le="1"} 0',
      'x_seconds_bucket{processor="bb\\"b",le="+Inf"} 1',
      'x_seconds_sum{processor="bb\\"b"} 2',
      'x_seconds_count{processor="bb\\"b"} 1',
      '',
    ].join('\n'),
  )
})

test('exposition: what a peer sends is data: malformed families and samples are left out', async (t) => {
  const families = [
    { name: 'bad name', help: 'h', type: 'gauge', values: [{ value: 1, labels: {} }] },
    { name: 'no_type', help: 'h', type: 'weird', values: [{ value: 1, labels: {} }] },
    { name: 'g', help: 'h', type: 'gauge', values: [{ value: 1, labels: { processor: 'spoof' } }] },
    { name: 'g', help: 'h', type: 'gauge', values: [{ value: 2, labels: { 'bad-label': 'x' } }] },
    { name: 'g', help: 'h', type: 'gauge', values: [{ value: null, labels: { ok: 'y' } }, null] },
    { name: 'g', help: 'h', type: 'counter', values: [{ value: 3, labels: {} }] },
    {
      name: 'h',
      help: 'h',
      type: 'histogram',
      values: [{ value: 1, metricName: 'other_bucket', labels: {} }],
    },
  ] as unknown as MetricFamily[]
  t.is(
    exposeLabelled('processor', [{ value: 'p', families }]),
    '# HELP g h\n# TYPE g gauge\ng{processor="p",ok="y"} NaN\n',
    'only the well-formed sample of the first type seen',
  )
  t.is(exposeLabelled('processor', []), '', 'nothing from nobody')
})
