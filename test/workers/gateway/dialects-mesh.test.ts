import Anthropic from '@anthropic-ai/sdk'
import test from 'brittle'
import OpenAI from 'openai'
import { apiKeyFor, spawnProcessor, startGateway, testnet, until } from '../../helpers/mesh.js'
import { parseProm, sample } from '../../helpers/prom.js'

const REQUESTS = 'llm_mesh_gateway_requests_total'
const QUESTION = 'count these words please'

test('dialects: Anthropic Messages and OpenAI Responses through a gateway and a processor', {
  timeout: 120_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, { http: { enabled: true, port: 0 } })
  await spawnProcessor(t, bootstrap, ['--store', await t.tmp(), '--backend', 'echo'])
  t.ok(await until(() => gateway.router.size === 1), 'the gateway sees the processor')
  const url = gateway.httpUrl as string
  const key = await apiKeyFor(gateway)
  const anthropic = new Anthropic({ baseURL: url, apiKey: key, maxRetries: 0 })
  const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: key, maxRetries: 0 })
  const user = [{ role: 'user' as const, content: QUESTION }]

  const { data: msg, response } = await anthropic.messages
    .create({ model: 'echo', max_tokens: 100, system: 'be brief', messages: user })
    .withResponse()
  t.alike(msg.content, [{ type: 'text', text: QUESTION }], 'the echo backend answers the question back')
  t.is(msg.id, `msg_${response.headers.get('x-request-id')}`, "the message's id is the request's")
  t.is(msg.stop_reason, 'end_turn')
  t.is(msg.usage.output_tokens, [...QUESTION].length)
  const stream = anthropic.messages.stream({ model: 'echo', max_tokens: 5, messages: user })
  let streamed = ''
  stream.on('text', (text) => {
    streamed += text
  })
  const final = await stream.finalMessage()
  t.is(streamed, 'count', 'streamed text, cut at max_tokens')
  t.is(final.stop_reason, 'max_tokens')
  const thinking = await anthropic.messages
    .create({
      model: 'echo',
      max_tokens: 100,
      thinking: { type: 'enabled', budget_tokens: 1024 },
      messages: user,
    })
    .catch((e: unknown) => e)
  t.is((thinking as InstanceType<typeof Anthropic.APIError>).status, 400)
  t.ok(
    (thinking as InstanceType<typeof Anthropic.APIError>).message.includes(
      'thinking is not supported by the echo backend',
    ),
    "the backend's refusal, named as the caller named it",
  )

  const r = await openai.responses.create({ model: 'echo', instructions: 'be brief', input: QUESTION })
  t.is(r.output_text, QUESTION)
  t.is(r.status, 'completed')
  const events = await openai.responses.create({ model: 'echo', input: QUESTION, stream: true })
  let text = ''
  let completed = false
  for await (const e of events) {
    if (e.type === 'response.output_text.delta') text += e.delta
    if (e.type === 'response.completed') completed = e.response.status === 'completed'
  }
  t.is(text, QUESTION, 'streamed text')
  t.ok(completed, 'response.completed last')
  const format = await openai.responses
    .create({ model: 'echo', input: QUESTION, text: { format: { type: 'json_object' } } })
    .catch((e: unknown) => e)
  t.is((format as InstanceType<typeof OpenAI.APIError>).param, 'text.format')
  t.is((format as InstanceType<typeof OpenAI.APIError>).code, 'err_unsupported')

  const series = parseProm(await (await fetch(`${url}/metrics`)).text())
  t.is(sample(series, REQUESTS, { api: 'anthropic', code: 'ok' }), 2, 'Anthropic answers counted')
  t.is(sample(series, REQUESTS, { api: 'anthropic', code: 'ERR_UNSUPPORTED' }), 1)
  t.is(sample(series, REQUESTS, { api: 'responses', code: 'ok' }), 2, 'Responses answers counted')
  t.is(sample(series, REQUESTS, { api: 'responses', code: 'ERR_UNSUPPORTED' }), 1)
})
