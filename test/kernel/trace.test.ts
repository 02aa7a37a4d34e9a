import test from 'brittle'
import {
  formatTiming,
  parseTiming,
  REQUEST_ID,
  requestIdSequence,
  traceIdOf,
  validRequestId,
} from '../../kernel/trace.js'

test('trace: request ids a caller may give', (t) => {
  t.is(validRequestId('abc-123 /x'), 'abc-123 /x', 'printable ASCII with a space')
  t.is(validRequestId('x'.repeat(128)), 'x'.repeat(128), '128 characters')
  t.is(validRequestId('x'.repeat(129)), null, '129: too long')
  t.is(validRequestId(''), null, 'empty')
  t.is(validRequestId('a\tb'), null, 'a control character')
  t.is(validRequestId('a\r\nX-Evil: 1'), null, 'a header injection')
  t.is(validRequestId('é'), null, 'not ASCII')
  t.is(validRequestId(['a']), null, 'not a string')
  t.ok(REQUEST_ID.test('~'), 'the last printable')
})

test('trace: W3C traceparent', (t) => {
  const id = '4bf92f3577b34da6a3ce929d0e0e4736'
  t.is(traceIdOf(`00-${id}-00f067aa0ba902b7-01`), id)
  t.is(traceIdOf(`01-${id}-00f067aa0ba902b7-01-extra`), id, 'a later version may add fields')
  t.is(traceIdOf(`00-${id}-00f067aa0ba902b7-01-extra`), null, 'version 00 has exactly four')
  t.is(traceIdOf(`ff-${id}-00f067aa0ba902b7-01`), null, 'version ff is invalid')
  t.is(traceIdOf(`00-${'0'.repeat(32)}-00f067aa0ba902b7-01`), null, 'an all-zero trace id')
  t.is(traceIdOf(`00-${id}-${'0'.repeat(16)}-01`), null, 'an all-zero parent id')
  t.is(traceIdOf(`00-${id.toUpperCase()}-00f067aa0ba902b7-01`), null, 'uppercase hex')
  t.is(traceIdOf(`00-${id}-00f067aa0ba902b7`), null, 'no flags')
  t.is(traceIdOf(undefined), null)
})

test('trace: made ids are 32 hex digits, unique, never all zeros', (t) => {
  const next = requestIdSequence()
  const ids = Array.from({ length: 1000 }, next)
  t.ok(ids.every((id) => /^[0-9a-f]{32}$/.test(id) && traceIdOf(`00-${id}-00f067aa0ba902b7-01`) === id))
  t.is(new Set(ids).size, 1000)
  t.not(requestIdSequence()().slice(0, 16), ids[0]?.slice(0, 16), 'another sequence, another prefix')
})

test('trace: the timing header, written and read', (t) => {
  const timing = { totalMs: 18.204, gatewayMs: 1.21, queueMs: 0.3, retryMs: 0, upstreamMs: 16.694 }
  const unanswered = formatTiming(timing)
  t.is(
    unanswered,
    'total;dur=18.204, gateway;dur=1.210, queue;dur=0.300, retry;dur=0.000, upstream;dur=16.694',
  )
  const full = formatTiming({ ...timing, processorMs: 15.02, backendMs: 0.005 })
  t.is(full, `${unanswered}, processor;dur=15.020, backend;dur=0.005`)
  t.alike(parseTiming(full), {
    total: 18.204,
    gateway: 1.21,
    queue: 0.3,
    retry: 0,
    upstream: 16.694,
    processor: 15.02,
    backend: 0.005,
  })
  for (const ms of [0, 0.0004, 0.0005, 1.9995, 123.456, 100000.1]) {
    t.is(
      formatTiming({ ...timing, totalMs: ms }).split(',')[0],
      `total;dur=${ms.toFixed(3)}`,
      `${ms} as toFixed(3)`,
    )
  }
  t.alike(
    parseTiming('total;dur=1, bogus, x;desc="y";dur=2'),
    { total: 1 },
    'entries not name;dur=n are skipped',
  )
})
