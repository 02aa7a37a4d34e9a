import test from 'brittle'
import { TINY_MODEL_NAME } from '../../../facilities/tiny-model/tiny-model.js'
import { apiKeyFor, spawnTinyProcessor, startGateway, testnet, until } from '../../helpers/mesh.js'
import { parseProm, sample } from '../../helpers/prom.js'

const GENERATIONS = 'llm_mesh_processor_generations_total'
const TOKENS = 'llm_mesh_processor_tokens_total'

async function scrape(url: string) {
  return { series: parseProm(await (await fetch(url)).text()) }
}

function post(url: string, body: unknown, key: string) {
  return fetch(url, {
    method: 'POST',
    body: JSON.stringify(body),
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${key}` },
  })
}

test('processor metrics: llama.cpp counts its model loads and the models in memory', {
  timeout: 60_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, { http: { enabled: true, port: 0 } })
  const proc = await spawnTinyProcessor(t, bootstrap, ['--metrics-port', '0'])
  t.ok(await until(() => gateway.router.size === 1), 'the gateway sees the processor')
  const url = gateway.httpUrl as string
  const key = await apiKeyFor(gateway)
  const label = { processor: proc.publicKey.slice(0, 16) }
  const before = await scrape(`${url}/metrics`)
  t.is(sample(before.series, 'llm_mesh_processor_models_loaded', label), 0, 'nothing loaded yet')
  t.is(sample(before.series, 'llm_mesh_processor_model_load_seconds_count', label), 0, 'no load yet')
  for (let i = 0; i < 2; i++) {
    const res = await post(
      `${url}/api/generate`,
      { model: TINY_MODEL_NAME, prompt: 'abc', stream: false, options: { num_predict: 4 } },
      key,
    )
    t.is(res.status, 200, `generation ${i + 1}`)
    await res.text()
  }
  const after = await scrape(`${url}/metrics`)
  t.is(sample(after.series, 'llm_mesh_processor_models_loaded', label), 1, 'one model in memory')
  t.is(sample(after.series, 'llm_mesh_processor_model_load_seconds_count', label), 1, 'loaded once for both')
  t.ok(sample(after.series, 'llm_mesh_processor_model_load_seconds_sum', label) > 0, 'and it took some time')
  t.is(sample(after.series, GENERATIONS, { ...label, outcome: 'ok' }), 2, 'two generations')
  t.is(
    sample(after.series, TOKENS, { ...label, kind: 'completion', model: TINY_MODEL_NAME }),
    8,
    'four tokens each',
  )
  t.ok(sample(after.series, 'llm_mesh_processor_tokens_per_second', label) > 0, 'a speed estimate')
})
