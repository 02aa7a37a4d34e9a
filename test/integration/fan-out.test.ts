import test, { type Test } from 'brittle'
import { parseConfig, processorConfigSchema } from '../../kernel/config.js'
import type { InferResult } from '../../kernel/inference.js'
import type { MeshClient } from '../../workers/client/client.worker.js'
import type { GatewayWorker } from '../../workers/gateway/gateway.worker.js'
import { GatewaySource } from '../../workers/gateway/http-source.js'
import { ProcessorWorker } from '../../workers/processor/processor.worker.js'
import { rejectsWith } from '../helpers/assert.js'
import { apiKeyFor, startClient, startGateway, TEST_LOG, testnet, until } from '../helpers/mesh.js'
import { parseProm, sample } from '../helpers/prom.js'

const PROMPT = 'three of these'
const REQUESTS = 'llm_mesh_gateway_requests_total'
const TOKENS = 'llm_mesh_gateway_tokens_total'

/** A gateway (HTTP on, for its /metrics) and `count` echo processors in this process, all seen. */
async function mesh(t: Test, count: number) {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, { http: { enabled: true, port: 0 } })
  const processors = await Promise.all(
    Array.from({ length: count }, async () => {
      const config = parseConfig(processorConfigSchema, {
        bootstrap,
        store: await t.tmp(),
        log: TEST_LOG,
        backend: { type: 'echo' },
        firewall: { trustedGateways: [gateway.publicKeyHex] },
      })
      const p = new ProcessorWorker(config)
      t.teardown(() => p.close(), { order: 1 })
      await p.ready()
      return p.publicKeyHex
    }),
  )
  t.ok(await until(() => gateway.router.size === count, 15_000), `the gateway sees ${count} processor(s)`)
  return { bootstrap, gateway, processors }
}

const ask = (client: MeshClient, n: number) =>
  client.chat({ model: 'echo', messages: [{ role: 'user', content: PROMPT }], n })

async function scrape(gateway: GatewayWorker) {
  return parseProm(await (await fetch(`${gateway.httpUrl}/metrics`)).text())
}

async function recordsOf(gateway: GatewayWorker, username: string) {
  const user = gateway.auth?.user(username)
  return user ? ((await gateway.usage?.records(user.id, 0, Date.now() + 1)) ?? []) : []
}

/** The choices' indexes, processors and texts as a test reads them. */
const shape = (r: InferResult) => (r.choices ?? []).map((c) => [c.index, c.text, c.doneReason])

test('fan-out: n 3 over three processors: a choice from each, one admission, one record, counted once', {
  timeout: 60_000,
}, async (t) => {
  const { bootstrap, gateway, processors } = await mesh(t, 3)
  const client = await startClient(
    t,
    bootstrap,
    {},
    { apiKey: await apiKeyFor(gateway, 'nina', 'user', { rpm: 1 }) },
  )
  const before = await scrape(gateway)

  const result = await ask(client, 3)
  t.alike(
    shape(result),
    [0, 1, 2].map((i) => [i, PROMPT, 'stop']),
    'three whole choices, in index order',
  )
  const served = (result.choices ?? []).map((c) => c.processor)
  t.alike([...served].sort(), [...processors].sort(), 'each from another of the three processors')
  t.is(result.processor, served[0], "the answer's processor is the first choice's")
  t.is(result.text, PROMPT)
  const chars = [...PROMPT].length
  t.is(result.promptTokens, 3 * chars, 'prompt tokens: each processor read the prompt')
  t.is(result.completionTokens, 3 * chars, 'completion tokens: the three choices')

  await rejectsWith(t, ask(client, 1), 'ERR_RATE_LIMITED', 'rpm 1: the request of three choices counted once')
  const records = await recordsOf(gateway, 'nina')
  t.is(records.length, 1, 'one usage record')
  t.alike(
    records.map((r) => [r.status, r.promptTokens, r.completionTokens, r.processor]),
    [['ok', result.promptTokens, result.completionTokens, served[0]]],
    'with the summed tokens',
  )
  t.is(records[0]?.id, result.requestId, "under the answer's request id")

  const after = await scrape(gateway)
  const delta = (name: string, labels: Record<string, string>) =>
    sample(after, name, labels) - sample(before, name, labels)
  t.is(delta(REQUESTS, { api: 'rpc', code: 'ok' }), 1, 'one request in the metrics')
  t.is(delta(REQUESTS, { api: 'rpc', code: 'ERR_RATE_LIMITED' }), 1, 'and the refused one')
  t.is(delta(TOKENS, { kind: 'completion', model: 'echo' }), result.completionTokens, 'every token counted')
})

test('fan-out: streamed over RPC and through the HTTP source, every piece with its index; n 9 refused', {
  timeout: 60_000,
}, async (t) => {
  const { bootstrap, gateway, processors } = await mesh(t, 3)
  const key = await apiKeyFor(gateway)
  const client = await startClient(t, bootstrap, {}, { apiKey: key })

  const texts = new Map<number | undefined, string>()
  const stream = client.chat({
    model: 'echo',
    messages: [{ role: 'user', content: PROMPT }],
    n: 3,
    stream: true,
  })
  let result: InferResult | null = null
  for await (const part of stream) {
    if (part.done) result = part.result
    else texts.set(part.index, (texts.get(part.index) ?? '') + part.text)
  }
  t.alike([...texts.keys()].sort(), [0, 1, 2], 'pieces of the three choices, each with its index')
  t.ok(
    [...texts.values()].every((text) => text === PROMPT),
    "each choice's pieces make its whole text",
  )
  t.alike(
    (result?.choices ?? []).map((c) => c.index),
    [0, 1, 2],
    'the final result lists the choices',
  )
  t.alike(
    [...new Set(result?.choices?.map((c) => c.processor))].sort(),
    [...processors].sort(),
    'from the three processors',
  )

  // What the HTTP dialects call: ChatRequest.n passes through, pieces come with their index.
  const identity = gateway.auth?.authenticate(key) ?? null
  const source = new GatewaySource(gateway, identity, { arrived: performance.now() })
  const pieces: Array<[string, number | undefined]> = []
  const viaSource = await source.chat(
    { model: 'echo', messages: [{ role: 'user', content: PROMPT }], n: 2 },
    { onToken: (text, index) => pieces.push([text, index]) },
  )
  t.is(viaSource.choices?.length, 2, 'the HTTP source answers the two choices')
  t.alike([...new Set(pieces.map(([, index]) => index))].sort(), [0, 1], 'and streams both, by index')

  await rejectsWith(t, ask(client, 9), 'ERR_BAD_REQUEST', 'more than 8 choices')
  await rejectsWith(t, ask(client, 0), 'ERR_BAD_REQUEST', 'no choice at all')
})

test('fan-out: n 3 with one processor: the three choices from it', { timeout: 60_000 }, async (t) => {
  const { bootstrap, gateway, processors } = await mesh(t, 1)
  const client = await startClient(t, bootstrap, {}, { apiKey: await apiKeyFor(gateway) })
  const result = await ask(client, 3)
  t.alike(
    shape(result),
    [0, 1, 2].map((i) => [i, PROMPT, 'stop']),
    'three whole choices',
  )
  t.alike(
    result.choices?.map((c) => c.processor),
    [processors[0], processors[0], processors[0]],
    'all from the one processor',
  )
  t.is(gateway.router.list()[0]?.inflight, 0, 'its slots freed')
})
