import test from 'brittle'
import { chat, post } from '../../helpers/http.js'
import { apiKeyFor, spawnProcessor, startGateway, testnet, until } from '../../helpers/mesh.js'
import { parseProm, sample } from '../../helpers/prom.js'
import { prometheusMissing, promtool, said } from '../../helpers/prometheus.js'

const GENERATIONS = 'llm_mesh_processor_generations_total'
const BACKEND_ERRORS = 'llm_mesh_processor_backend_errors_total'
const TOKENS = 'llm_mesh_processor_tokens_total'
const DURATION = 'llm_mesh_processor_generation_duration_seconds_count'
const FIRST_TOKEN = 'llm_mesh_processor_time_to_first_token_seconds_count'

async function scrape(url: string) {
  const res = await fetch(url)
  const text = await res.text()
  return { res, text, series: parseProm(text) }
}

test('processor metrics: its own /metrics and the gateway scrape agree, exactly', {
  timeout: 60_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, { http: { enabled: true, port: 0 } })
  const proc = await spawnProcessor(t, bootstrap, [
    '--store',
    await t.tmp(),
    '--backend',
    'echo',
    '--metrics-port',
    '0',
  ])
  t.ok(await until(() => gateway.router.size === 1), 'the gateway sees the processor')
  const url = gateway.httpUrl as string
  const key = await apiKeyFor(gateway)
  const peer = gateway.net.peer(Buffer.from(proc.publicKey, 'hex'))
  const status = await peer.request<{ metricsUrl?: string }>('status', null)
  const own = status.metricsUrl as string
  t.ok(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/.test(own), `status names its /metrics (${own})`)
  const label = { processor: proc.publicKey.slice(0, 16) }
  const at = (extra: Record<string, string> = {}) => ({ ...label, ...extra })

  const before = { own: await scrape(own), mesh: await scrape(`${url}/metrics`) }
  t.is(before.own.res.status, 200)
  t.ok(before.own.res.headers.get('content-type')?.startsWith('text/plain'), 'the text format')
  t.is(sample(before.own.series, 'llm_mesh_processor_capacity'), 2, 'capacity: --parallel default')
  t.is(sample(before.mesh.series, 'llm_mesh_processor_capacity', label), 2, 'the same through the gateway')
  t.is(sample(before.own.series, 'llm_mesh_processor_draining'), 0, 'not drained')
  t.is(sample(before.own.series, 'llm_mesh_processor_generations_in_flight'), 0, 'nothing running')
  t.is(sample(before.own.series, 'llm_mesh_processor_models_loaded'), 0, 'echo loads no model')
  t.ok(
    sample(before.own.series, 'llm_mesh_rpc_connections', { direction: 'inbound' }) >= 1,
    'the gateway is connected',
  )
  t.ok(sample(before.own.series, 'llm_mesh_dht_announces_total') >= 1, 'it announced itself')
  t.ok(sample(before.mesh.series, 'llm_mesh_dht_lookups_total') >= 1, 'the gateway looked processors up')
  t.ok(
    sample(before.mesh.series, 'llm_mesh_rpc_connections', { direction: 'outbound' }) >= 1,
    'to the processor',
  )
  t.ok(before.own.text.includes('# TYPE llm_mesh_nodejs_eventloop_lag_seconds gauge'), 'event-loop lag')
  t.ok(before.own.text.includes('# TYPE llm_mesh_nodejs_gc_duration_seconds histogram'), 'GC durations')
  t.absent(
    before.mesh.text.includes('llm_mesh_nodejs_eventloop_lag_seconds{processor'),
    "not a processor's process series",
  )
  t.is((await fetch(own.replace('/metrics', '/other'))).status, 404, 'nothing else on its port')

  // One whole answer, one stream, two failures in the backend (a model it does not serve, sent straight to it).
  const whole = (await (await post(`${url}/api/chat`, chat(), key)).json()) as {
    prompt_eval_count: number
    eval_count: number
  }
  const streamed = await post(
    `${url}/v1/chat/completions`,
    chat({ stream: true, stream_options: { include_usage: true } }),
    key,
  )
  const usage = (await streamed.text())
    .split('\n')
    .filter((l) => l.startsWith('data: {'))
    .map((l) => JSON.parse(l.slice(6)) as { usage?: { prompt_tokens: number; completion_tokens: number } })
    .find((e) => e.usage)?.usage
  t.ok(usage, 'the stream reports its usage')
  await t.exception(
    peer.request('infer', {
      kind: 'chat',
      model: 'no-such-model',
      stream: false,
      messages: [{ role: 'user', content: 'x' }],
    }),
    /ERR_MODEL_NOT_FOUND/,
    'the backend refuses a model it does not serve',
  )
  await t.exception(
    peer.request('embed', { model: 'no-such-model', input: ['x'] }),
    /ERR_MODEL_NOT_FOUND/,
    'an embedding too',
  )

  const after = { own: await scrape(own), mesh: await scrape(`${url}/metrics`) }
  const prompt = whole.prompt_eval_count + (usage?.prompt_tokens ?? 0)
  const completion = whole.eval_count + (usage?.completion_tokens ?? 0)
  t.ok(prompt > 0 && completion > 0, `the answers had tokens (${prompt}, ${completion})`)
  for (const [where, labels] of [
    ['own', {}],
    ['mesh', label],
  ] as const) {
    const b = before[where].series
    const a = after[where].series
    const delta = (name: string, extra: Record<string, string> = {}) =>
      sample(a, name, { ...labels, ...extra }) - sample(b, name, { ...labels, ...extra })
    t.is(delta(GENERATIONS, { outcome: 'ok' }), 2, `${where}: two generations answered`)
    t.is(delta(GENERATIONS, { outcome: 'ERR_MODEL_NOT_FOUND' }), 1, `${where}: one failed`)
    t.is(delta(BACKEND_ERRORS, { code: 'ERR_MODEL_NOT_FOUND' }), 2, `${where}: both in the backend`)
    t.is(delta(DURATION), 2, `${where}: a duration per answer`)
    t.is(delta(FIRST_TOKEN), 2, `${where}: a first token per answer`)
    t.is(delta(TOKENS, { kind: 'prompt', model: 'echo' }), prompt, `${where}: prompt tokens`)
    t.is(delta(TOKENS, { kind: 'completion', model: 'echo' }), completion, `${where}: completion tokens`)
  }
  t.absent(after.mesh.text.includes('no-such-model'), 'no caller text in a label')
  t.is(sample(after.mesh.series, 'llm_mesh_processor_generations_in_flight', at()), 0, 'all done')
  t.is(sample(after.mesh.series, 'llm_mesh_gateway_processor_scrape_errors_total'), 0, 'no scrape missed it')
  const families = after.mesh.text.split('\n').filter((l) => l.startsWith(`# TYPE ${GENERATIONS} `))
  t.is(families.length, 1, 'one TYPE line per family')

  // Under .ci/run (LLM_MESH_REQUIRE_PROMETHEUS=1) promtool is there; elsewhere it may be missing.
  const missing = prometheusMissing()
  if (missing && process.env.LLM_MESH_REQUIRE_PROMETHEUS === '1') t.fail(missing)
  else if (missing) t.comment(`${missing}: the text format is not checked by promtool`)
  else {
    for (const [where, text] of [
      ['processor', after.own.text],
      ['gateway', after.mesh.text],
    ] as const) {
      const checked = promtool(['check', 'metrics'], text)
      t.is(checked.status, 0, said(`promtool check metrics: the ${where}'s /metrics`, checked))
      t.is(`${checked.stdout}${checked.stderr}`.trim(), '', `no lint problem (${where})`)
    }
  }

  // Drained for maintenance: the gauge says so, and a drained processor's series still come through the gateway.
  await peer.request('maintenance', { draining: true })
  t.is(sample((await scrape(own)).series, 'llm_mesh_processor_draining'), 1, 'drained: 1')
  t.is(
    sample((await scrape(`${url}/metrics`)).series, 'llm_mesh_processor_draining', label),
    1,
    'through the gateway too',
  )

  // A processor that stops answering (frozen: its connection stays open) is left out of the scrape, and counted.
  proc.child.kill('SIGSTOP')
  const missed = await scrape(`${url}/metrics`)
  t.is(sample(missed.series, 'llm_mesh_gateway_processor_scrape_errors_total'), 1, 'one scrape missed it')
  t.absent(missed.text.includes('llm_mesh_processor_capacity{'), 'and has none of its series')
})
