import test from 'brittle'
import { LogFacility } from '../../../facilities/log.facility.js'
import { RequestTrace } from '../../../facilities/tracing/request-trace.js'
import { noop } from '../../../kernel/cancel.js'
import { gatewayConfigSchema, parseConfig } from '../../../kernel/config.js'
import { MeshError } from '../../../kernel/errors.js'
import { parseInferRequest } from '../../../kernel/inference.js'
import { InferencePipeline } from '../../../workers/gateway/inference-pipeline.js'
import { endTrace, startTrace } from '../../../workers/gateway/tracing.js'
import { logger, routerOver, standIn, standInNet } from '../../facilities/router/stand-in-pool.js'
import { LogCapture } from '../../helpers/traced-mesh.js'

const config = parseConfig(gatewayConfigSchema, {
  bootstrap: ['127.0.0.1:1'],
  routing: { retryBaseMs: 1, retryMaxMs: 5, breakerFailures: 100 },
})

const chat = () =>
  parseInferRequest(
    { kind: 'chat', model: 'm', messages: [{ role: 'user', content: 'hi' }] },
    config.maxPromptBytes,
  )

test('gateway tracing: a retry is logged at warn with the id; the id goes to the processor; the timing adds up', async (t) => {
  const pool = [standIn(1), standIn(2)]
  const router = await routerOver(pool, { retryBaseMs: 1, retryMaxMs: 5, breakerFailures: 100 })
  t.teardown(() => router.close())
  const pipeline = new InferencePipeline(
    config,
    () => router,
    () => standInNet(pool),
    () => logger,
  )
  const sent: unknown[] = []
  const [bad, good] = pool as [(typeof pool)[0], (typeof pool)[0]]
  bad.answer = async (_m, payload) => {
    sent.push(payload)
    throw new MeshError('ERR_BACKEND_UNAVAILABLE', 'the backend is down')
  }
  good.answer = async (_m, payload) => {
    sent.push(payload)
    return {
      text: 'ok',
      promptTokens: 1,
      completionTokens: 1,
      doneReason: 'stop',
      timing: { processorMs: 2.5, backendMs: 2 },
    }
  }
  const out = new LogCapture()
  const log = new LogFacility({ level: 'debug', destination: out }).logger
  let retried: RequestTrace | null = null
  for (let i = 0; i < 10 && !retried; i++) {
    const trace = new RequestTrace(`req-${i}`, log, performance.now(), undefined, false)
    const req = chat()
    startTrace(trace, req)
    const sink = { runningKey: null, onText: null, watch: () => noop, trace }
    const result = await endTrace(trace, req, pipeline.run(req, sink, ''))
    t.is(result.requestId, `req-${i}`, 'the answer carries the id')
    t.is(result.processor, good.key.toString('hex'))
    if (trace.retryMs > 0) retried = trace
  }
  t.ok(retried, 'a request was retried')
  const id = retried?.id as string
  const warn = out.about(id).find((l) => l.level === 40)
  t.is(warn?.msg, 'processor failed before first token', 'the retry is a warn line with the id')
  t.is(warn?.processor, bad.key.toString('hex'))
  t.is(out.about(id).find((l) => l.level === 20)?.msg, 'request done', 'and its end a debug line')
  t.ok(
    sent.every((p) => typeof (p as { requestId?: string }).requestId === 'string'),
    'every attempt sends the id to the processor',
  )
  const timing = retried?.final
  t.alike([timing?.processorMs, timing?.backendMs], [2.5, 2], "the processor's own timing, as it reported it")
  t.ok((timing?.retryMs ?? 0) > 0 && (timing?.upstreamMs ?? 0) > 0, 'retry and upstream measured')
  const sum =
    (timing?.gatewayMs ?? 0) + (timing?.queueMs ?? 0) + (timing?.retryMs ?? 0) + (timing?.upstreamMs ?? 0)
  t.ok(Math.abs(sum - (timing?.totalMs ?? -1)) < 0.01, 'the parts add up to the total')
})

test('gateway tracing: a failure is logged at warn with the id and thrown with it', async (t) => {
  const pool = [standIn(1)]
  const router = await routerOver(pool, { retryBaseMs: 1, retryMaxMs: 5 })
  t.teardown(() => router.close())
  const pipeline = new InferencePipeline(
    config,
    () => router,
    () => standInNet(pool),
    () => logger,
  )
  ;(pool[0] as (typeof pool)[0]).answer = async () => {
    throw new MeshError('ERR_BACKEND_UNAVAILABLE', 'the backend is down', { retryAfterMs: 7 })
  }
  const out = new LogCapture()
  const log = new LogFacility({ level: 'info', destination: out }).logger
  const trace = new RequestTrace('fails-1', log, performance.now(), undefined, false)
  const req = chat()
  startTrace(trace, req)
  const err = await endTrace(
    trace,
    req,
    pipeline.run(req, { runningKey: null, onText: null, watch: () => noop, trace }, ''),
  ).then(
    () => null,
    (e: unknown) => MeshError.from(e),
  )
  t.is(err?.code, 'ERR_NO_PROCESSOR')
  t.is(err?.details?.requestId, 'fails-1', 'the error carries the id')
  const lines = out.about('fails-1')
  t.alike(
    lines.map((l) => [l.level, l.msg]),
    [
      [40, 'processor failed before first token'],
      [40, 'request failed'],
    ],
    'at info: the failed attempt and the failure, both with the id',
  )
  t.is(trace.final?.processorMs, undefined, 'no processor part: none answered')
})
