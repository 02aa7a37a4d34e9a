import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import test, { type Test } from 'brittle'
import { TINY_MODEL_NAME, writeTinyModel } from '../../facilities/tiny-model/tiny-model.js'
import type { UsageRecord } from '../../kernel/accounts.js'
import type { GatewayWorker } from '../../workers/gateway/gateway.worker.js'
import type { ProcessorMetricsReply } from '../../workers/processor/processor-observability.js'
import { rejectsWith } from '../helpers/assert.js'
import {
  apiKeyFor,
  type SpawnedProcessor,
  spawnProcessor,
  startClient,
  startGateway,
  testnet,
  until,
} from '../helpers/mesh.js'
import { parseProm, sample } from '../helpers/prom.js'

/**
 * Billing that matches what ran, with real llama.cpp processors: a stream its caller abandons
 * is recorded with the tokens its processor generated up to the stop, as the processor itself
 * counted them; a request that moved to another processor before its first token is recorded
 * once, with the tokens of the one that served it.
 */

const LOOP_MODEL = 'looper'

/** A models folder with the tiny model and the looping one (never stops by itself). */
async function modelsDir(t: Test): Promise<string> {
  const dir = await t.tmp()
  await writeTinyModel(join(dir, `${TINY_MODEL_NAME}.gguf`))
  await writeTinyModel(join(dir, `${LOOP_MODEL}.gguf`), { loop: true })
  return dir
}

/** A llama.cpp processor child; `config`: its config file's content. */
async function processor(t: Test, bootstrap: string[], config: object = {}): Promise<SpawnedProcessor> {
  const file = join(await t.tmp(), 'processor.json')
  await writeFile(file, JSON.stringify(config))
  const models = await modelsDir(t)
  return spawnProcessor(t, bootstrap, ['--config', file, '--store', await t.tmp(), '--models', models])
}

/** Completion tokens a processor counted in the generations it answered (cancelled ones too). */
async function generatedBy(gateway: GatewayWorker, p: SpawnedProcessor): Promise<number> {
  const reply = await gateway.net
    .peer(Buffer.from(p.publicKey, 'hex'))
    .request<ProcessorMetricsReply>('metrics', null, { timeout: 5_000 })
  const family = reply.metrics.find((f) => f.name === 'llm_mesh_processor_tokens_total')
  return (family?.values ?? [])
    .filter((v) => v.labels?.kind === 'completion')
    .reduce((n, v) => n + Number(v.value), 0)
}

async function recordsOf(gateway: GatewayWorker, username: string): Promise<UsageRecord[]> {
  const user = gateway.auth?.user(username)
  return user ? ((await gateway.usage?.records(user.id, 0, Date.now() + 1)) ?? []) : []
}

/** The usage record of the request `nth` (from 1) of `username`, once written. */
async function nthRecord(gateway: GatewayWorker, username: string, nth: number): Promise<UsageRecord | null> {
  let found: UsageRecord | null = null
  await until(async () => {
    const records = await recordsOf(gateway, username)
    found = records.length >= nth ? (records.sort((a, b) => a.ts - b.ts)[nth - 1] ?? null) : null
    return found !== null
  }, 10_000)
  return found
}

test('billing: an abandoned stream (RPC cancel, HTTP disconnect) or one its deadline stops is billed what its processor generated', {
  timeout: 120_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, { http: { enabled: true, port: 0 } })
  // 50 tokens a second: a stream long enough to leave in its middle.
  const p = await processor(t, bootstrap, {
    backend: { type: 'llamacpp', throttle: { tokensPerSecond: 50 } },
  })
  const key = await apiKeyFor(gateway, 'quinn', 'user')
  const client = await startClient(t, bootstrap, {}, { apiKey: key })
  t.ok(await until(() => gateway.router.size === 1), 'the gateway sees the processor')

  // Over RPC: a few pieces read, then the stream is aborted (a `cancel` to the gateway).
  const stream = client.generate({
    model: LOOP_MODEL,
    prompt: 'a',
    options: { num_predict: 1000 },
    stream: true,
  })
  let received = ''
  for await (const part of stream) {
    if (part.done) break
    received += part.text
    if (received.length >= 10) {
      stream.abort()
      break
    }
  }
  const rpc = await nthRecord(gateway, 'quinn', 1)
  const afterRpc = await generatedBy(gateway, p)
  t.is(rpc?.status, 'cancelled', 'recorded as cancelled')
  t.ok(
    (rpc?.completionTokens ?? 0) >= received.length,
    `${rpc?.completionTokens} tokens, at least the ${received.length} read`,
  )
  t.ok((rpc?.completionTokens ?? 1000) < 1000, 'stopped well before the end')
  t.is(rpc?.completionTokens, afterRpc, 'exactly what the processor generated')
  t.is(rpc?.processor, p.publicKey, 'and the processor that generated them')

  // Over HTTP: the client reads a few lines of an Ollama stream, then disconnects.
  const abort = new AbortController()
  const res = await fetch(`${gateway.httpUrl}/api/generate`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: LOOP_MODEL, prompt: 'a', options: { num_predict: 1000 } }),
    signal: abort.signal,
  })
  const reader = (res.body as ReadableStream<Uint8Array>).getReader()
  let lines = 0
  while (lines < 10) {
    const { value, done } = await reader.read()
    if (done) break
    lines += new TextDecoder().decode(value).split('\n').filter(Boolean).length
  }
  abort.abort()
  const http = await nthRecord(gateway, 'quinn', 2)
  const afterHttp = await generatedBy(gateway, p)
  t.is(http?.status, 'cancelled', 'the disconnected one too')
  t.ok(
    (http?.completionTokens ?? 0) >= lines,
    `${http?.completionTokens} tokens, at least the ${lines} lines read`,
  )
  t.ok((http?.completionTokens ?? 1000) < 1000, 'stopped well before the end')
  t.is(http?.completionTokens, afterHttp - afterRpc, 'exactly what the processor generated')

  // A stream its deadline stops: ERR_TIMEOUT, billed what the processor generated until then.
  let streamed = 0
  const timed = client.generate({
    model: LOOP_MODEL,
    prompt: 'a',
    options: { num_predict: 1000 },
    stream: true,
    timeoutMs: 1500,
  })
  const ended = (async () => {
    for await (const part of timed) if (!part.done) streamed += part.text.length
  })()
  await rejectsWith(t, ended, 'ERR_TIMEOUT', 'the deadline ends the stream')
  const late = await nthRecord(gateway, 'quinn', 3)
  const afterTimeout = await generatedBy(gateway, p)
  t.alike([late?.status, late?.code], ['error', 'ERR_TIMEOUT'], 'recorded as timed out')
  t.ok(
    (late?.completionTokens ?? 0) >= streamed && streamed > 0,
    `${late?.completionTokens} tokens, ${streamed} read`,
  )
  t.is(late?.completionTokens, afterTimeout - afterHttp, 'exactly what the processor generated')
  t.is((await recordsOf(gateway, 'quinn')).length, 3, 'one record each')
  const metrics = parseProm(await (await fetch(`${gateway.httpUrl}/metrics`)).text())
  t.is(
    sample(metrics, 'llm_mesh_gateway_tokens_total', { kind: 'completion', model: LOOP_MODEL }),
    afterTimeout,
    "the gateway's metrics count every token the three generated",
  )
})

test('billing: n 3 abandoned mid-stream stops every choice and bills what they generated', {
  timeout: 120_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap)
  // One processor running the three choices side by side, 50 tokens a second each.
  const p = await processor(t, bootstrap, {
    backend: { type: 'llamacpp', maxParallel: 3, throttle: { tokensPerSecond: 50 } },
  })
  const client = await startClient(t, bootstrap, {}, { apiKey: await apiKeyFor(gateway, 'sam', 'user') })
  t.ok(await until(() => gateway.router.size === 1), 'the gateway sees the processor')
  const stream = client.generate({
    model: LOOP_MODEL,
    prompt: 'a',
    options: { num_predict: 1000 },
    n: 3,
    stream: true,
  })
  const read = new Map<number | undefined, number>()
  for await (const part of stream) {
    if (part.done) break
    read.set(part.index, (read.get(part.index) ?? 0) + part.text.length)
    if (read.size === 3 && [...read.values()].every((n) => n >= 5)) {
      stream.abort()
      break
    }
  }
  t.alike([...read.keys()].sort(), [0, 1, 2], 'the three choices streamed')
  const record = await nthRecord(gateway, 'sam', 1)
  t.ok(await until(() => gateway.router.list()[0]?.inflight === 0), 'every leg stopped')
  const generated = await generatedBy(gateway, p)
  const readAll = [...read.values()].reduce((a, b) => a + b, 0)
  t.is(record?.status, 'cancelled', 'one record, cancelled')
  t.ok(
    (record?.completionTokens ?? 0) >= readAll,
    `${record?.completionTokens} tokens, at least the ${readAll} read`,
  )
  t.ok((record?.completionTokens ?? 3000) < 3000, 'stopped well before the end')
  t.is(record?.completionTokens, generated, 'exactly what the processor generated for the three')
  t.is((await recordsOf(gateway, 'sam')).length, 1, 'and only one')
})

test('billing: a request moved to another processor before its first token is billed once, as served', {
  timeout: 120_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  // The request waits on the stuck processor while a second one starts (seconds on a busy
  // machine): the retry budget, counted from the request's arrival, must outlast that.
  const gateway = await startGateway(t, bootstrap, { routing: { retryBudgetMs: 60_000 } })
  // The first processor never gets to its first token: it is killed while the request waits.
  const stuck = await processor(t, bootstrap, {
    backend: { type: 'llamacpp', throttle: { firstTokenDelayMs: 60_000 } },
  })
  const client = await startClient(t, bootstrap, {}, { apiKey: await apiKeyFor(gateway, 'rory', 'user') })
  t.ok(await until(() => gateway.router.size === 1), 'the gateway sees the first processor')
  const stream = client.chat({
    model: TINY_MODEL_NAME,
    messages: [{ role: 'user', content: 'abc' }],
    options: { temperature: 0 },
    stream: true,
  })
  t.ok(await until(() => gateway.router.list()[0]?.inflight === 1), 'the request runs on it')
  const serving = await processor(t, bootstrap, { backend: { type: 'llamacpp' } })
  t.ok(await until(() => gateway.router.size === 2), 'a second processor joins')
  await stuck.kill()

  let text = ''
  for await (const part of stream) if (!part.done) text += part.text
  const result = await stream.result
  t.is(result.processor, serving.publicKey, 'the second processor served it')
  t.is(text, 'defghijklmnopqrstuvwxyz', 'the whole answer, once')
  const records = await recordsOf(gateway, 'rory')
  t.is(records.length, 1, 'one usage record')
  t.alike(
    records.map((r) => [r.status, r.processor, r.promptTokens, r.completionTokens]),
    [['ok', serving.publicKey, result.promptTokens, result.completionTokens]],
    "with the serving processor's tokens",
  )
  t.is(result.completionTokens, await generatedBy(gateway, serving), 'as that processor counted them')
})
