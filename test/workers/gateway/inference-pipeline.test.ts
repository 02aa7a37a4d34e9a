import test from 'brittle'
import { ChunkWriter, type StreamChunk } from '../../../facilities/net/streaming.js'
import type { RouterFacility } from '../../../facilities/router/router.facility.js'
import { noop } from '../../../kernel/cancel.js'
import { gatewayConfigSchema, parseConfig } from '../../../kernel/config.js'
import { MeshError } from '../../../kernel/errors.js'
import { parseInferRequest } from '../../../kernel/inference.js'
import { InferencePipeline, type Sink } from '../../../workers/gateway/inference-pipeline.js'
import {
  logger,
  routerOver,
  type StandIn,
  standIn,
  standInNet,
} from '../../facilities/router/stand-in-pool.js'
import { until } from '../../helpers/mesh.js'

const config = parseConfig(gatewayConfigSchema, {
  bootstrap: ['127.0.0.1:1'],
  routing: { retryBaseMs: 1, retryMaxMs: 5 },
})

async function pipelineOver(pool: StandIn[]) {
  const router: RouterFacility = await routerOver(pool, { retryBaseMs: 1, retryMaxMs: 5 })
  const net = standInNet(pool)
  return {
    router,
    pipeline: new InferencePipeline(
      config,
      () => router,
      () => net,
      () => logger,
    ),
  }
}

const chat = (stream = false) =>
  parseInferRequest(
    { kind: 'chat', model: 'm', messages: [{ role: 'user', content: 'hi' }], stream },
    config.maxPromptBytes,
  )

function sink(texts: string[] = [], watch: Sink['watch'] = () => noop): Sink {
  return { runningKey: null, onText: (t) => texts.push(t), watch }
}

const failing = (code: string) => async () => {
  throw new MeshError(code as 'ERR_UNAVAILABLE', 'it failed')
}

test('pipeline: a retryable error moves the request to another processor', async (t) => {
  const pool = [standIn(1), standIn(2)]
  const { router, pipeline } = await pipelineOver(pool)
  t.teardown(() => router.close())
  for (const p of pool) p.answer = failing('ERR_UNAVAILABLE')
  const good = pool[1] as StandIn
  good.answer = async () => ({ text: 'ok', promptTokens: 1, completionTokens: 1 })
  for (let i = 0; i < 3; i++) {
    const result = await pipeline.run(chat(), sink(), '')
    t.is(result.processor, good.key.toString('hex'), 'answered by the processor that works')
  }
  t.is(
    router.list().reduce((n, p) => n + p.inflight, 0),
    0,
    'every slot freed',
  )
})

test('pipeline: when every processor fails, ERR_NO_PROCESSOR after the attempts', async (t) => {
  const pool = [standIn(1), standIn(2)]
  const { router, pipeline } = await pipelineOver(pool)
  t.teardown(() => router.close())
  for (const p of pool) p.answer = failing('ERR_BACKEND_UNAVAILABLE')
  await t.exception(pipeline.run(chat(), sink(), ''), /ERR_NO_PROCESSOR/)
})

test('pipeline: a non-retryable error passes through, tried once', async (t) => {
  const pool = [standIn(1), standIn(2)]
  const { router, pipeline } = await pipelineOver(pool)
  t.teardown(() => router.close())
  let calls = 0
  for (const p of pool)
    p.answer = async () => {
      calls++
      throw MeshError.badRequest('bad prompt')
    }
  await t.exception(pipeline.run(chat(), sink(), ''), /ERR_BAD_REQUEST/)
  t.is(calls, 1)
  t.is(pipeline.retries, 0, 'no retry counted')
})

test('pipeline: a stream that fails after chunks is not retried: ERR_STREAM_BROKEN', async (t) => {
  const pool = [standIn(1), standIn(2)]
  const { router, pipeline } = await pipelineOver(pool)
  t.teardown(() => router.close())
  let calls = 0
  for (const p of pool)
    p.answer = async (_m, _p, opts) => {
      calls++
      ;(opts.onChunk as (c: { text: string }) => void)({ text: 'partial' })
      throw new MeshError('ERR_UNAVAILABLE', 'connection lost')
    }
  const texts: string[] = []
  await t.exception(pipeline.run(chat(true), sink(texts), ''), /ERR_STREAM_BROKEN/)
  t.is(calls, 1, 'not sent again')
  t.alike(texts, ['partial'])
  t.is(pipeline.retries, 0, 'no retry counted')
  t.is(pipeline.failovers, 0, 'no failover counted')
})

test('pipeline: a cancelled request stops its leg and frees its slot', async (t) => {
  const pool = [standIn(1)]
  const { router, pipeline } = await pipelineOver(pool)
  t.teardown(() => router.close())
  ;(pool[0] as StandIn).answer = (_m, _p, opts) =>
    new Promise((_, reject) => {
      ;(opts.cancel as { onAbort: (fn: (r: unknown) => void) => void }).onAbort(() =>
        reject(MeshError.cancelled()),
      )
    })
  let stop = noop
  const running = pipeline.run(
    chat(),
    sink([], (cancel) => {
      stop = () => cancel.abort()
      return noop
    }),
    '',
  )
  await new Promise((r) => setImmediate(r))
  t.is(router.list()[0]?.inflight, 1)
  stop()
  await t.exception(running, /ERR_CANCELLED/)
  t.is(router.list()[0]?.inflight, 0, 'the slot is free')
  t.is(router.list()[0]?.breaker, 'closed', 'not held against the processor')
})

test('pipeline: a processor dropped mid-request fails its leg over to another', async (t) => {
  t.timeout(10_000)
  const pool = [standIn(1), standIn(2)]
  const { router, pipeline } = await pipelineOver(pool)
  t.teardown(() => router.close())
  // Both hang until their leg is stopped; the request lands on one of them.
  const hang = (_m: string, _p: unknown, opts: Record<string, unknown>) =>
    new Promise((_, reject) => {
      ;(opts.cancel as { onAbort: (fn: (r: unknown) => void) => void }).onAbort(reject)
    })
  for (const p of pool) p.answer = hang
  const running = pipeline.run(chat(), sink(), '')
  await until(() => router.list().some((p) => p.inflight === 1))
  const goneId = router.list().find((p) => p.inflight === 1)?.publicKey
  const other = pool.find((p) => p.key.toString('hex') !== goneId) as StandIn
  other.answer = async () => ({ text: 'from the other', promptTokens: 1, completionTokens: 1 })
  const entry = router.entriesFor('m').find((e) => e.id === goneId)
  if (!entry) return t.fail('the busy processor is known')
  // What the gateway does on the router's `drop` event.
  router.drop(entry, 'test')
  pipeline.failOver(entry, 'is gone')
  const result = await running
  t.is(result.processor, other.key.toString('hex'), 'answered by the processor that stayed')
  t.is(result.text, 'from the other')
  t.is(
    router.list().reduce((n, p) => n + p.inflight, 0),
    0,
    'every slot freed',
  )
  t.is(entry.inflight, 0, "the dropped processor's slot freed")
  t.is(pipeline.failovers, 1, 'one failover counted (metrics)')
  t.is(pipeline.retries, 1, 'and one retry')
})

test('pipeline: streamed parts reach the sink in the order generated: reasoning, text, then tool calls', async (t) => {
  const pool = [standIn(1)]
  const { router, pipeline } = await pipelineOver(pool)
  t.teardown(() => router.close())
  const call = { id: 'c1', name: 'look', arguments: {} }
  ;(pool[0] as StandIn).answer = async (_m, _p, opts) => {
    const onChunk = opts.onChunk as (c: StreamChunk) => void
    // As a processor's writer sends them: the pending text in a chunk of its own, then the call.
    const writer = new ChunkWriter(onChunk, 's', 1000)
    writer.write('one')
    writer.write(' let me check')
    writer.writeDelta({ toolCalls: [call] })
    // A chunk with every part at once (a writer that coalesced them): still in order.
    onChunk({ id: 's', seq: 9, text: ' two', thinking: 'hmm', toolCalls: [{ ...call, id: 'c2' }] })
    return { text: '', doneReason: 'tool_calls', promptTokens: 1, completionTokens: 1 }
  }
  const events: unknown[] = []
  const s: Sink = {
    runningKey: null,
    onText: (text) => events.push(text),
    onDelta: (d) => events.push(d.toolCalls ? `call ${d.toolCalls[0]?.id}` : `thinking ${d.thinking}`),
    watch: () => noop,
  }
  await pipeline.run(chat(true), s, '')
  t.alike(events, ['one', ' let me check', 'call c1', 'thinking hmm', ' two', 'call c2'])
})
