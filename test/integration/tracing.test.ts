import { type IncomingHttpHeaders, request } from 'node:http'
import test, { type Test } from 'brittle'
import { MeshError } from '../../kernel/errors.js'
import { parseTiming } from '../../kernel/trace.js'
import { rejectsWith } from '../helpers/assert.js'
import { apiKeyFor, startClient } from '../helpers/mesh.js'
import { type LogCapture, tracedMesh } from '../helpers/traced-mesh.js'

const HEX32 = /^[0-9a-f]{32}$/
const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736'
const TRACEPARENT = `00-${TRACE_ID}-00f067aa0ba902b7-01`

/** One raw HTTP request (node:http: any header bytes, trailers read). */
function raw(
  url: string,
  path: string,
  body: unknown,
  headers: Record<string, string>,
): Promise<{ status: number; headers: IncomingHttpHeaders; trailers: NodeJS.Dict<string>; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${url}${path}`,
      { method: 'POST', headers: { 'Content-Type': 'application/json', ...headers } },
      (res) => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (d: string) => {
          text += d
        })
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, trailers: res.trailers, text }),
        )
      },
    )
    req.on('error', reject)
    req.end(JSON.stringify(body))
  })
}

/** A timing header's parts: all there, none negative, and they add up. */
function checkTiming(t: Test, header: string | undefined | null, what: string, processor = true): void {
  t.ok(header, `${what}: timing present`)
  const p = parseTiming(header ?? '')
  const names = [
    'total',
    'gateway',
    'queue',
    'retry',
    'upstream',
    ...(processor ? ['processor', 'backend'] : []),
  ]
  t.alike(Object.keys(p), names, `${what}: the parts, in order`)
  t.ok(
    Object.values(p).every((v) => Number.isFinite(v) && v >= 0),
    `${what}: every part ≥ 0 (${header})`,
  )
  const sum = (p.gateway ?? 0) + (p.queue ?? 0) + (p.retry ?? 0) + (p.upstream ?? 0)
  t.ok(Math.abs(sum - (p.total ?? -1)) < 0.01, `${what}: gateway + queue + retry + upstream = total`)
  if (processor) {
    t.ok((p.processor ?? -1) >= (p.backend ?? 0), `${what}: processor ≥ backend`)
    t.ok((p.upstream ?? -1) + 0.002 >= (p.processor ?? 0), `${what}: upstream ≥ processor`)
  }
}

/** Lines about `reqId` on both workers. */
function trail(t: Test, gw: LogCapture, pr: LogCapture, reqId: string, what: string): void {
  t.ok(gw.about(reqId).length >= 1, `${what}: in a gateway log line`)
  t.ok(pr.about(reqId).length >= 1, `${what}: in a processor log line`)
}

const chat = (stream: boolean) => ({
  model: 'echo',
  messages: [{ role: 'user', content: 'one two three' }],
  stream,
})

test('tracing: HTTP request ids (given, traceparent, bad, made), in both logs; timing header and trailers', async (t) => {
  const { gateway, gatewayLog, processorLog } = await tracedMesh(t, {
    gateway: { tracing: { serverTiming: true } },
  })
  const url = gateway.httpUrl as string
  const auth = { Authorization: `Bearer ${await apiKeyFor(gateway)}` }

  const given = await raw(url, '/api/chat', chat(false), { ...auth, 'X-Request-Id': 'my-request 0001' })
  t.is(given.status, 200)
  t.is(given.headers['x-request-id'], 'my-request 0001', 'the given X-Request-Id comes back')
  t.is(JSON.parse(given.text).message.content, 'one two three')
  checkTiming(t, given.headers['x-llm-mesh-timing'] as string, 'unary')
  t.is(
    given.headers['server-timing'],
    given.headers['x-llm-mesh-timing'],
    'tracing.serverTiming: Server-Timing, the same',
  )
  trail(t, gatewayLog, processorLog, 'my-request 0001', 'a given id')
  const done = processorLog.about('my-request 0001').find((l) => l.msg === 'infer done')
  t.is(done?.model, 'echo', "the processor's line names the model")

  const traced = await raw(url, '/api/chat', chat(false), { ...auth, traceparent: TRACEPARENT })
  t.is(traced.headers['x-request-id'], TRACE_ID, "a traceparent's trace id is the request id")
  trail(t, gatewayLog, processorLog, TRACE_ID, 'a trace id')
  t.is(
    processorLog.about(TRACE_ID).find((l) => l.msg === 'infer done')?.traceparent,
    TRACEPARENT,
    'the traceparent reaches the processor as it came',
  )

  const tooLong = await raw(url, '/api/chat', chat(false), { ...auth, 'X-Request-Id': 'x'.repeat(129) })
  const replaced = tooLong.headers['x-request-id'] as string
  t.ok(HEX32.test(replaced), `an X-Request-Id over 128 characters is replaced (${replaced})`)
  trail(t, gatewayLog, processorLog, replaced, 'a replacing id')
  const control = await raw(url, '/api/chat', chat(false), { ...auth, 'X-Request-Id': 'tab\there' })
  t.ok(HEX32.test(control.headers['x-request-id'] as string), 'one with a control character is replaced')
  const badParent = await raw(url, '/api/chat', chat(false), {
    ...auth,
    traceparent: `00-${'0'.repeat(32)}-00f067aa0ba902b7-01`,
  })
  t.ok(HEX32.test(badParent.headers['x-request-id'] as string), 'an all-zero trace id is not taken')
  t.not(badParent.headers['x-request-id'], '0'.repeat(32))

  // A stream: the head goes out before the timing is known, which follows as trailers.
  const streamed = await raw(url, '/v1/chat/completions', chat(true), { ...auth, 'X-Request-Id': 'stream-1' })
  t.is(streamed.status, 200)
  t.is(streamed.headers['x-request-id'], 'stream-1')
  t.is(streamed.headers.trailer, 'X-LLM-Mesh-Timing, Server-Timing', 'the head announces the trailers')
  t.is(streamed.headers['x-llm-mesh-timing'], undefined, 'no timing in the head of a stream')
  checkTiming(t, streamed.trailers['x-llm-mesh-timing'], 'stream trailer')
  t.is(streamed.trailers['server-timing'], streamed.trailers['x-llm-mesh-timing'])
  t.absent(streamed.text.includes('dur='), 'no timing inside the SSE frames')
  t.ok(streamed.text.includes('data: [DONE]'), 'the stream ends as OpenAI streams do')
  trail(t, gatewayLog, processorLog, 'stream-1', 'a streamed request')

  // A failure keeps its id, and its timing has no processor part.
  const missing = await raw(
    url,
    '/api/chat',
    { ...chat(false), model: 'nope' },
    { ...auth, 'X-Request-Id': 'nope-1' },
  )
  t.is(missing.status, 404)
  t.is(missing.headers['x-request-id'], 'nope-1', 'an error keeps the id')
  checkTiming(t, missing.headers['x-llm-mesh-timing'] as string, 'error', false)
  t.is(gatewayLog.about('nope-1')[0]?.code, 'ERR_MODEL_NOT_FOUND', "the refusal's line carries the id")

  // Embeddings: the id reaches the processor's log; no timing.
  const embed = await raw(
    url,
    '/api/embed',
    { model: 'echo', input: ['a', 'b'] },
    { ...auth, 'X-Request-Id': 'embed-1' },
  )
  t.is(embed.status, 200)
  t.is(embed.headers['x-request-id'], 'embed-1')
  t.is(processorLog.about('embed-1')[0]?.msg, 'embed done', "the processor's line about the embedding")
  t.is(embed.headers['x-llm-mesh-timing'], undefined, 'no timing for embeddings')

  // Not an inference: the id, no timing.
  const tags = await fetch(`${url}/api/tags`, { headers: { ...auth, 'X-Request-Id': 'tags-1' } })
  t.is(tags.headers.get('x-request-id'), 'tags-1')
  t.is(tags.headers.get('x-llm-mesh-timing'), null, 'no timing on a request that is no inference')
})

test('tracing: MeshClient results carry the request id and timing; both logs have it', async (t) => {
  const { gateway, gatewayLog, processorLog, bootstrap } = await tracedMesh(t)
  const key = await apiKeyFor(gateway)
  const client = await startClient(t, bootstrap, {}, { apiKey: key })

  // By default the timing is X-LLM-Mesh-Timing only, not Server-Timing.
  const auth = { Authorization: `Bearer ${key}` }
  const unary = await raw(gateway.httpUrl as string, '/api/chat', chat(false), auth)
  checkTiming(t, unary.headers['x-llm-mesh-timing'] as string, 'default unary')
  t.is(unary.headers['server-timing'], undefined, 'no Server-Timing unless tracing.serverTiming')
  const streamed = await raw(gateway.httpUrl as string, '/api/chat', chat(true), auth)
  t.is(streamed.headers.trailer, 'X-LLM-Mesh-Timing', 'a stream announces the one trailer')
  checkTiming(t, streamed.trailers['x-llm-mesh-timing'], 'default stream trailer')
  t.is(streamed.trailers['server-timing'], undefined)
  t.is(
    streamed.text
      .split('\n')
      .filter((l) => l.trim() !== '')
      .at(-1)
      ?.includes('"done":true'),
    true,
    'NDJSON ends with its done line',
  )

  const made = await client.chat({ model: 'echo', messages: [{ role: 'user', content: 'hi there' }] })
  t.is(made.text, 'hi there')
  t.ok(HEX32.test(made.requestId ?? ''), `a made id (${made.requestId})`)
  trail(t, gatewayLog, processorLog, made.requestId as string, 'a made id')
  const records = (await client.usage({ records: true })).records ?? []
  t.ok(
    records.some((r) => r.id === made.requestId),
    'an id the gateway made is also the usage record id',
  )
  const timing = made.timing
  t.ok(
    timing && timing.totalMs >= timing.upstreamMs && (timing.processorMs ?? -1) >= (timing.backendMs ?? 0),
    'timing in the result',
  )

  const own = await client.generate({ model: 'echo', prompt: 'abc', requestId: 'client-7' })
  t.is(own.requestId, 'client-7', 'the given id comes back')
  trail(t, gatewayLog, processorLog, 'client-7', 'a given id')
  t.is(
    gatewayLog.about('client-7').find((l) => l.msg === 'request done')?.processor,
    processorKey(gateway),
    "the gateway's line names the processor",
  )

  const stream = client.chat({
    model: 'echo',
    messages: [{ role: 'user', content: 'a b c' }],
    stream: true,
    requestId: 's-9',
  })
  let text = ''
  for await (const part of stream) if (!part.done) text += part.text
  const result = await stream.result
  t.is(text, 'a b c')
  t.is(result.requestId, 's-9', 'a stream: the id in its result')
  t.ok(result.timing?.processorMs !== undefined, 'a stream: the processor timing in its result')
  trail(t, gatewayLog, processorLog, 's-9', 'a stream')

  const err = await client.generate({ model: 'nope', prompt: 'x', requestId: 'fail-1' }).then(
    () => null,
    (e: unknown) => MeshError.from(e),
  )
  t.is(err?.code, 'ERR_MODEL_NOT_FOUND')
  t.is(err?.details?.requestId, 'fail-1', "an error carries the request's id")

  await rejectsWith(
    t,
    client.generate({ model: 'echo', prompt: 'x', requestId: 'bad\nid' }),
    'ERR_BAD_REQUEST',
    'a bad requestId over RPC: ERR_BAD_REQUEST',
  )
})

function processorKey(gateway: { router: { list(): { publicKey: string }[] } }): string | undefined {
  return gateway.router.list()[0]?.publicKey
}

test('tracing: off — no ids made, no timing, no request lines', async (t) => {
  const { gateway, gatewayLog, processorLog, bootstrap } = await tracedMesh(t, {
    gateway: { tracing: { enabled: false } },
  })
  const url = gateway.httpUrl as string
  const key = await apiKeyFor(gateway)
  const res = await raw(url, '/api/chat', chat(false), {
    Authorization: `Bearer ${key}`,
    'X-Request-Id': 'ignored-1',
  })
  t.is(res.status, 200)
  t.not(res.headers['x-request-id'], 'ignored-1', "the caller's id is not taken")
  t.is(res.headers['x-llm-mesh-timing'], undefined, 'no timing header')
  t.is(res.headers['server-timing'], undefined)
  const client = await startClient(t, bootstrap, {}, { apiKey: key })
  const answer = await client.chat({ model: 'echo', messages: [{ role: 'user', content: 'x' }] })
  t.is(answer.timing, undefined, 'no timing in the result')
  const reqLines = (c: LogCapture) => c.lines().filter((l) => l.reqId !== undefined).length
  t.is(reqLines(gatewayLog), 0, 'no gateway line with a reqId')
  t.is(reqLines(processorLog), 0, 'no processor line with a reqId')
})
