import test from 'brittle'
import { chat, post } from '../../helpers/http.js'
import { apiKeyFor, spawnProcessor, startClient, startGateway, testnet, until } from '../../helpers/mesh.js'
import { parseProm, sample } from '../../helpers/prom.js'

const REQUESTS = 'llm_mesh_gateway_requests_total'
const DURATION = 'llm_mesh_gateway_request_duration_seconds_count'
const FIRST_TOKEN = 'llm_mesh_gateway_time_to_first_token_seconds_count'
const TOKENS = 'llm_mesh_gateway_tokens_total'

async function scrape(url: string) {
  const res = await fetch(`${url}/metrics`)
  return { res, series: parseProm(await res.text()) }
}

test('metrics: /metrics counts each request by API and outcome, once', { timeout: 120_000 }, async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, { http: { enabled: true, port: 0 } })
  await spawnProcessor(t, bootstrap, ['--store', await t.tmp(), '--backend', 'echo'])
  t.ok(await until(() => gateway.router.size === 1), 'the gateway sees the processor')
  const url = gateway.httpUrl as string
  const key = await apiKeyFor(gateway)
  const slowKey = await apiKeyFor(gateway, 'slowpoke', 'user', { rpm: 1 })
  const client = await startClient(t, bootstrap, {}, { apiKey: key })

  const before = await scrape(url)
  t.is(before.res.status, 200, 'open without a key')
  t.ok(before.res.headers.get('content-type')?.startsWith('text/plain'), 'the text format')
  t.is(sample(before.series, 'llm_mesh_gateway_processors', { state: 'serving' }), 1, 'one serving processor')
  t.ok(sample(before.series, 'llm_mesh_process_cpu_seconds_total') > 0, 'process metrics, prefixed')

  // Ollama, not streamed: ok.
  const whole = await post(`${url}/api/chat`, chat(), key)
  t.is(whole.status, 200)
  const wholeBody = (await whole.json()) as { prompt_eval_count: number; eval_count: number }
  // OpenAI, streamed: ok, with a first token.
  const streamed = await post(
    `${url}/v1/chat/completions`,
    chat({ stream: true, stream_options: { include_usage: true } }),
    key,
  )
  t.is(streamed.status, 200)
  const events = (await streamed.text())
    .split('\n')
    .filter((l) => l.startsWith('data: {'))
    .map((l) => JSON.parse(l.slice(6)) as { usage?: { prompt_tokens: number; completion_tokens: number } })
  const usage = events.find((e) => e.usage)?.usage
  t.ok(usage, 'the stream reports its usage')
  // A bad key: 401 before any source exists.
  t.is((await post(`${url}/api/chat`, chat(), 'not-a-key')).status, 401)
  // A user allowed one request a minute: the second is 429.
  const slowFirst = await post(`${url}/api/chat`, chat(), slowKey)
  t.is(slowFirst.status, 200)
  const slowBody = (await slowFirst.json()) as { prompt_eval_count: number; eval_count: number }
  t.is((await post(`${url}/api/chat`, chat(), slowKey)).status, 429)
  // A model nobody serves.
  t.is((await post(`${url}/v1/chat/completions`, chat({ model: 'no-such-model' }), key)).status, 404)
  // One RPC request.
  const rpc = await client.chat({ model: 'echo', messages: [{ role: 'user', content: 'over rpc' }] })

  const after = await scrape(url)
  const delta = (name: string, labels: Record<string, string> = {}) =>
    sample(after.series, name, labels) - sample(before.series, name, labels)
  t.is(
    delta(REQUESTS, { api: 'ollama', code: 'ok' }),
    2,
    'ollama ok: the whole answer and the first slow one',
  )
  t.is(delta(REQUESTS, { api: 'ollama', code: 'ERR_AUTH_INVALID' }), 1, 'the bad key')
  t.is(delta(REQUESTS, { api: 'ollama', code: 'ERR_RATE_LIMITED' }), 1, 'the rate limited one')
  t.is(delta(REQUESTS, { api: 'openai', code: 'ok' }), 1, 'the stream')
  t.is(delta(REQUESTS, { api: 'openai', code: 'ERR_MODEL_NOT_FOUND' }), 1, 'the unknown model')
  t.is(delta(REQUESTS, { api: 'rpc', code: 'ok' }), 1, 'the RPC request')
  const codes = [...after.series.keys()].filter((k) => k.startsWith(`${REQUESTS}{`))
  const total = codes.reduce((sum, k) => sum + (after.series.get(k) ?? 0) - (before.series.get(k) ?? 0), 0)
  t.is(total, 7, 'nothing else counted (not the scrapes)')
  t.is(delta(DURATION, { api: 'ollama' }), 4, 'a duration per Ollama request')
  t.is(delta(DURATION, { api: 'openai' }), 2, 'a duration per OpenAI request')
  t.is(delta(DURATION, { api: 'rpc' }), 1, 'a duration per RPC request')
  t.is(delta(FIRST_TOKEN, { api: 'openai' }), 1, 'a first token for the stream')
  t.is(delta(FIRST_TOKEN, { api: 'ollama' }), 0, 'none for answers given whole')
  const prompt = wholeBody.prompt_eval_count + slowBody.prompt_eval_count + (usage?.prompt_tokens ?? 0)
  const completion = wholeBody.eval_count + slowBody.eval_count + (usage?.completion_tokens ?? 0)
  t.ok(prompt > 0 && completion > 0, `the answers had tokens (${prompt}, ${completion})`)
  t.is(
    delta(TOKENS, { kind: 'prompt', model: 'echo' }),
    prompt + rpc.promptTokens,
    'prompt tokens of the answers',
  )
  t.is(
    delta(TOKENS, { kind: 'completion', model: 'echo' }),
    completion + rpc.completionTokens,
    'completion tokens of the answers',
  )
  t.absent(
    [...after.series.keys()].some((k) => k.includes('no-such-model') || k.includes('slowpoke')),
    'no caller text in any label',
  )
})

test('metrics: http.metrics false leaves /metrics behind the key', { timeout: 60_000 }, async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, { http: { enabled: true, port: 0, metrics: false } })
  const url = gateway.httpUrl as string
  t.is((await fetch(`${url}/metrics`)).status, 401, 'no key: 401')
  const key = await apiKeyFor(gateway)
  const res = await fetch(`${url}/metrics`, { headers: { Authorization: `Bearer ${key}` } })
  t.is(res.status, 404, 'with a key: no such route')
})
