import test from 'brittle'
import {
  apiKeyFor,
  closedPort,
  spawnProcessor,
  startClient,
  startGateway,
  testnet,
  until,
} from '../../helpers/mesh.js'
import { parseProm, sample } from '../../helpers/prom.js'

const AUTH = 'llm_mesh_gateway_auth_failures_total'
const LIMITS = 'llm_mesh_gateway_limit_rejections_total'
const OVERHEAD = 'llm_mesh_gateway_overhead_seconds_count'
const QUEUE_WAIT = 'llm_mesh_gateway_queue_wait_seconds_count'
const COMMITS = 'llm_mesh_gateway_ledger_commit_seconds_count'

async function scrape(url: string) {
  return parseProm(await (await fetch(`${url}/metrics`)).text())
}

function post(url: string, body: unknown, key?: string) {
  return fetch(url, {
    method: 'POST',
    body: JSON.stringify(body),
    headers: { 'Content-Type': 'application/json', ...(key ? { Authorization: `Bearer ${key}` } : {}) },
  })
}

const chat = (content = 'count these words please') => ({
  model: 'echo',
  messages: [{ role: 'user', content }],
  stream: false,
})

test('gateway metrics: auth failures, limits, queue, overhead, breakers, ledger', {
  timeout: 60_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const metricsPort = await closedPort()
  const gateway = await startGateway(t, bootstrap, {
    http: { enabled: true, port: 0 },
    metrics: { port: metricsPort },
  })
  // One slot, paced: a second request at the same time waits in the queue.
  await spawnProcessor(t, bootstrap, [
    '--store',
    await t.tmp(),
    '--backend',
    'echo',
    '--parallel',
    '1',
    '--throttle-tps',
    '40',
  ])
  t.ok(await until(() => gateway.router.size === 1), 'the gateway sees the processor')
  const url = gateway.httpUrl as string
  const key = await apiKeyFor(gateway)
  const slowKey = await apiKeyFor(gateway, 'slowpoke', 'user', { rpm: 1 })
  const client = await startClient(t, bootstrap)
  const usage = gateway.usage
  if (!usage) throw new Error('the gateway has no ledger')

  const before = await scrape(url)
  t.is(sample(before, 'llm_mesh_gateway_breakers', { state: 'closed' }), 1, 'one closed breaker')
  t.is(sample(before, 'llm_mesh_gateway_breakers', { state: 'open' }), 0)
  t.is(sample(before, 'llm_mesh_gateway_breakers', { state: 'half_open' }), 0)
  t.is(sample(before, 'llm_mesh_gateway_queue_depth'), 0, 'nobody waits')

  t.is((await post(`${url}/api/chat`, chat())).status, 401, 'no key')
  t.is((await post(`${url}/v1/chat/completions`, chat(), 'not-a-key')).status, 401, 'a bad key')
  await t.exception(client.login('admin', 'wrong password'), /ERR_AUTH_INVALID/, 'a wrong password over RPC')
  t.is((await post(`${url}/api/chat`, chat(), slowKey)).status, 200, 'the first of the minute')
  t.is((await post(`${url}/api/chat`, chat(), slowKey)).status, 429, 'the second: rpm')
  // Two at once on one slot: the second waits for the first.
  const both = await Promise.all([
    post(`${url}/api/chat`, chat('one two three four'), key),
    post(`${url}/api/chat`, chat('five six seven eight'), key),
  ])
  t.alike(
    both.map((r) => r.status),
    [200, 200],
    'both answered',
  )
  await Promise.all(both.map((r) => r.text()))
  await usage.indexed()

  const after = await scrape(url)
  const delta = (name: string, labels: Record<string, string> = {}) =>
    sample(after, name, labels) - sample(before, name, labels)
  t.is(delta(AUTH, { reason: 'ERR_AUTH_REQUIRED' }), 1, 'auth failures: no key')
  t.is(delta(AUTH, { reason: 'ERR_AUTH_INVALID' }), 2, 'auth failures: the bad key and the wrong password')
  t.is(delta(LIMITS, { limit: 'rpm' }), 1, 'limit rejections: rpm')
  t.is(delta(LIMITS, { limit: 'tpm' }), 0, 'none by tpm')
  t.is(delta(LIMITS, { limit: 'queue' }), 0, 'none by the queue')
  t.is(delta(QUEUE_WAIT), 1, 'one request waited for a slot')
  t.ok(
    sample(after, 'llm_mesh_gateway_queue_wait_seconds_sum') -
      sample(before, 'llm_mesh_gateway_queue_wait_seconds_sum') >
      0.01,
    'for as long as the first one ran',
  )
  t.is(sample(after, 'llm_mesh_gateway_queue_depth'), 0, 'nobody waits any more')
  t.is(delta(OVERHEAD, { api: 'ollama' }), 3, 'the gateway time of each answered Ollama request')
  t.is(delta(OVERHEAD, { api: 'openai' }), 0, 'none answered on OpenAI')
  t.is(delta('llm_mesh_gateway_retries_total'), 0, 'no retry')
  t.is(delta('llm_mesh_gateway_failovers_total'), 0, 'no failover')
  const commits = delta(COMMITS)
  t.ok(
    commits >= 2 && commits <= 3,
    `the three records took ${commits} journal writes (the two at once may share one)`,
  )
  t.is(sample(after, 'llm_mesh_gateway_ledger_index_lag'), 0, 'all indexed')

  // Its own metrics port serves the same view, the processors' series included.
  const own = await fetch(`http://127.0.0.1:${metricsPort}/metrics`)
  t.is(own.status, 200, 'a /metrics port of its own')
  const ownText = await own.text()
  t.ok(ownText.includes('# TYPE llm_mesh_gateway_requests_total counter'), "the gateway's series")
  t.ok(/^llm_mesh_processor_capacity\{processor="[0-9a-f]{16}"\} 1$/m.test(ownText), "and the processor's")
  t.is((await fetch(`http://127.0.0.1:${metricsPort}/api/chat`)).status, 404, 'and nothing else')

  // Over RPC: a request answered, with the gateway's own time.
  const rpcBefore = sample(after, OVERHEAD, { api: 'rpc' })
  const rpcClient = await startClient(t, bootstrap, {}, { apiKey: key })
  await rpcClient.chat({ model: 'echo', messages: [{ role: 'user', content: 'over rpc' }] })
  t.is(sample(await scrape(url), OVERHEAD, { api: 'rpc' }) - rpcBefore, 1, 'the RPC request too')
})
