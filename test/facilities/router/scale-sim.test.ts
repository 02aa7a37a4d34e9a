import test from 'brittle'
import { simulate } from './scale-sim.js'

// The full runs (10, 100 and 1,000 processors, repeated, before and after) are bench/routing-scale.ts.

test('routing at scale: 1,000 processors, picks under 1 ms at p99, status traffic within its bound', async (t) => {
  // A gateway runs for long: warm the code up first (the first picks run unoptimised).
  await simulate({ processors: 200, seconds: 3 })
  const r = await simulate({ processors: 1_000, seconds: 8, utilization: 0.25 })
  t.comment(JSON.stringify({ ...r, detectionMs: r.detectionMs.join(',') }))
  t.ok(r.leases > 1_500, `requests were served (${r.leases})`)
  t.ok(r.pickUs.p99 < 1_000, `pick p99 ${r.pickUs.p99.toFixed(1)} µs < 1 ms`)
  t.ok(r.releaseUs.p99 < 1_000, `release p99 ${r.releaseUs.p99.toFixed(1)} µs < 1 ms`)
  // The bound: a beat a second to each processor running this gateway's requests, and the budget
  // (100 a second) for the idle ones; each a request and a reply. 10% over for the churn's re-dials.
  const bound = 2 * (100 + r.busyProcessors) * 1.1
  t.ok(
    r.messagesPerSecond <= bound,
    `${r.messagesPerSecond.toFixed(0)} status messages/s ≤ ${bound.toFixed(0)} (${r.busyProcessors.toFixed(0)} processors busy)`,
  )
  t.ok(r.messagesPerSecond < 1_500, 'fewer than the 2,000 a second of polling all')
  t.ok(
    r.payloadBytesPerSecond < r.messagesPerSecond * 100,
    `${r.payloadBytesPerSecond.toFixed(0)} payload bytes/s: beats, not full statuses`,
  )
  t.ok(
    r.beatReplyBytes < 120 && r.fullReplyBytes > 4 * r.beatReplyBytes,
    `beat ${r.beatReplyBytes} B, full ${r.fullReplyBytes} B`,
  )
  t.ok(r.detectionMs.length > 0, 'a processor cut off ran requests of this gateway')
  t.ok(
    r.detectionMs.every((ms) => ms <= r.detectionBoundMs),
    `cut processors unreachable within ${r.detectionBoundMs} ms (${r.detectionMs.join(', ')})`,
  )
  t.is(r.servingAtEnd, 1_000, 'those that went away are back')
})

test('routing at scale: idle, 1,000 processors get the beat budget, not a beat each a second', async (t) => {
  const r = await simulate({ processors: 1_000, seconds: 6, utilization: 0 })
  t.ok(r.messagesPerSecond <= 2 * 100 * 1.1, `${r.messagesPerSecond.toFixed(0)} status messages/s`)
})

test('routing at scale: polling every processor every second (the design before) grows with them', async (t) => {
  const r = await simulate({ processors: 1_000, seconds: 4, utilization: 0.25, legacy: true })
  t.ok(r.messagesPerSecond > 1_900, `${r.messagesPerSecond.toFixed(0)} status messages/s`)
  t.ok(r.payloadBytesPerSecond > 500_000, `${r.payloadBytesPerSecond.toFixed(0)} payload bytes/s`)
})
