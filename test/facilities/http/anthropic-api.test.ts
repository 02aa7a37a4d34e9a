import Anthropic from '@anthropic-ai/sdk'
import type { Test } from 'brittle'
import test from 'brittle'
import { MeshError } from '../../../kernel/errors.js'
import { CountedMetrics, KEY, MODEL, ScriptedSource, serveGateway } from './scripted-source.js'

async function setup(t: Test) {
  const source = new ScriptedSource()
  const metrics = new CountedMetrics()
  const url = await serveGateway(t, source, metrics)
  const client = new Anthropic({ baseURL: url, apiKey: KEY, maxRetries: 0 })
  return { source, metrics, url, client }
}

const CALL = { id: 'call_1', name: 'get_weather', arguments: { city: 'Paris' } }
const WEATHER = {
  name: 'get_weather',
  description: 'The weather in a city',
  input_schema: { type: 'object' as const, properties: { city: { type: 'string' } }, required: ['city'] },
}

test('anthropic-api: a whole message, and the wire request it became', async (t) => {
  const { source, metrics, client } = await setup(t)
  const sampling = { temperature: 0.5, top_p: 0.9, top_k: 20 }
  const msg = await client.messages.create({
    model: MODEL,
    max_tokens: 100,
    system: [
      { type: 'text', text: 'be brief' },
      { type: 'text', text: 'be kind', cache_control: { type: 'ephemeral' } },
    ],
    messages: [{ role: 'user', content: 'hi' }],
    // Sampling parameters older clients send (this SDK's types no longer list them).
    ...sampling,
    stop_sequences: ['END', 'STOP'],
    metadata: { user_id: 'u1' },
  })
  t.ok(msg.id.startsWith('msg_'), 'an Anthropic message id')
  t.is(msg.type, 'message')
  t.is(msg.role, 'assistant')
  t.is(msg.model, MODEL)
  t.alike(msg.content, [{ type: 'text', text: 'Hello' }])
  t.is(msg.stop_reason, 'end_turn')
  t.is(msg.stop_sequence, null)
  t.alike(msg.usage, { input_tokens: 5, output_tokens: 7 })
  t.alike(source.last, {
    model: MODEL,
    messages: [
      { role: 'system', content: 'be brief\nbe kind' },
      { role: 'user', content: 'hi' },
    ],
    options: { num_predict: 100, temperature: 0.5, top_p: 0.9, top_k: 20, stop: ['END', 'STOP'] },
  })
  t.alike(metrics.requests, [{ api: 'anthropic', code: 'ok' }], 'counted under the anthropic label')

  source.script = { tokens: ['Hel'], doneReason: 'length' }
  const cut = await client.messages.create({
    model: MODEL,
    max_tokens: 1,
    messages: [{ role: 'user', content: 'hi' }],
  })
  t.is(cut.stop_reason, 'max_tokens', 'a generation cut by max_tokens says so')
})

test('anthropic-api: tool use and tool results, both ways', async (t) => {
  const { source, client } = await setup(t)
  source.script = { tokens: ['Let me look.'], toolCalls: [CALL] }
  const msg = await client.messages.create({
    model: MODEL,
    max_tokens: 50,
    tools: [WEATHER],
    tool_choice: { type: 'any', disable_parallel_tool_use: true },
    messages: [
      { role: 'user', content: 'weather in Rome and Oslo?' },
      {
        role: 'assistant',
        content: [
          { type: 'thinking', thinking: 'two cities', signature: 'sig' },
          { type: 'text', text: 'Checking.' },
          { type: 'tool_use', id: 'toolu_a', name: 'get_weather', input: { city: 'Rome' } },
          { type: 'tool_use', id: 'toolu_b', name: 'get_weather', input: { city: 'Oslo' } },
        ],
      },
      {
        role: 'user',
        content: [
          { type: 'tool_result', tool_use_id: 'toolu_a', content: 'sunny' },
          {
            type: 'tool_result',
            tool_use_id: 'toolu_b',
            content: [{ type: 'text', text: 'timeout' }],
            is_error: true,
          },
          { type: 'text', text: 'and Paris?' },
        ],
      },
    ],
  })
  t.alike(msg.content, [
    { type: 'text', text: 'Let me look.' },
    { type: 'tool_use', id: 'call_1', name: 'get_weather', input: { city: 'Paris' } },
  ])
  t.is(msg.stop_reason, 'tool_use')
  t.alike(source.last, {
    model: MODEL,
    messages: [
      { role: 'user', content: 'weather in Rome and Oslo?' },
      {
        role: 'assistant',
        content: 'Checking.',
        thinking: 'two cities',
        toolCalls: [
          { id: 'toolu_a', name: 'get_weather', arguments: { city: 'Rome' } },
          { id: 'toolu_b', name: 'get_weather', arguments: { city: 'Oslo' } },
        ],
      },
      { role: 'tool', content: 'sunny', toolCallId: 'toolu_a', toolName: 'get_weather' },
      { role: 'tool', content: 'Error: timeout', toolCallId: 'toolu_b', toolName: 'get_weather' },
      { role: 'user', content: 'and Paris?' },
    ],
    options: { num_predict: 50 },
    tools: [
      {
        type: 'function',
        function: { name: 'get_weather', description: WEATHER.description, parameters: WEATHER.input_schema },
      },
    ],
    toolChoice: 'required',
    parallelToolCalls: false,
  })

  const choices = [
    [{ type: 'auto' }, { toolChoice: 'auto' }],
    [{ type: 'none' }, { toolChoice: 'none' }],
    [{ type: 'tool', name: 'get_weather' }, { toolChoice: { name: 'get_weather' } }],
    [
      { type: 'auto', disable_parallel_tool_use: false },
      { toolChoice: 'auto', parallelToolCalls: true },
    ],
  ] as const
  for (const [choice, wire] of choices) {
    await client.messages.create({
      model: MODEL,
      max_tokens: 5,
      tools: [WEATHER],
      tool_choice: choice,
      messages: [{ role: 'user', content: 'x' }],
    })
    const { toolChoice, parallelToolCalls } = source.last ?? {}
    t.alike(
      { toolChoice, parallelToolCalls },
      { parallelToolCalls: undefined, ...wire },
      `tool_choice ${JSON.stringify(choice)}`,
    )
  }
})

test('anthropic-api: thinking, effort and output format reach the source; reasoning comes back as a thinking block', async (t) => {
  const { source, client } = await setup(t)
  source.script = { thinking: ['Hmm, ', 'easy.'], tokens: ['4'] }
  const user = [{ role: 'user' as const, content: '2+2?' }]
  const msg = await client.messages.create({
    model: MODEL,
    max_tokens: 2000,
    thinking: { type: 'enabled', budget_tokens: 1024 },
    messages: user,
  })
  t.alike(msg.content, [
    { type: 'thinking', thinking: 'Hmm, easy.', signature: '' },
    { type: 'text', text: '4' },
  ])
  t.is(source.last?.think, true)

  const hidden = await client.messages.create({
    model: MODEL,
    max_tokens: 2000,
    thinking: { type: 'enabled', budget_tokens: 1024, display: 'omitted' },
    messages: user,
  })
  t.alike(hidden.content, [{ type: 'text', text: '4' }], 'display omitted: no reasoning shown')

  const settings = [
    [{ thinking: { type: 'disabled' } }, false],
    [{ thinking: { type: 'adaptive' } }, true],
    [{ thinking: { type: 'adaptive' }, output_config: { effort: 'high' } }, 'high'],
  ] as const
  for (const [extra, think] of settings) {
    await client.messages.create({ model: MODEL, max_tokens: 10, messages: user, ...extra })
    t.is(source.last?.think, think, JSON.stringify(extra))
  }

  const schema = {
    type: 'object',
    properties: { n: { type: 'integer' } },
    required: ['n'],
    additionalProperties: false,
  }
  await client.messages.create({
    model: MODEL,
    max_tokens: 10,
    messages: user,
    output_config: { format: { type: 'json_schema', schema } },
  })
  t.alike(source.last?.format, { type: 'json', schema })
})

test('anthropic-api: a stream with reasoning, text and a tool call, as the SDK reads it', async (t) => {
  const { source, url, client } = await setup(t)
  source.script = { thinking: ['Let ', 'me see.'], tokens: ['Hel', 'lo'], toolCalls: [CALL] }
  const stream = client.messages.stream({
    model: MODEL,
    max_tokens: 100,
    thinking: { type: 'enabled', budget_tokens: 1024 },
    tools: [WEATHER],
    messages: [{ role: 'user', content: 'weather?' }],
  })
  const types: string[] = []
  for await (const e of stream)
    types.push(e.type === 'content_block_delta' ? `delta:${e.delta.type}` : e.type)
  const final = await stream.finalMessage()
  t.alike(types, [
    'message_start',
    'content_block_start',
    'delta:thinking_delta',
    'delta:thinking_delta',
    'content_block_stop',
    'content_block_start',
    'delta:text_delta',
    'delta:text_delta',
    'content_block_stop',
    'content_block_start',
    'delta:input_json_delta',
    'content_block_stop',
    'message_delta',
    'message_stop',
  ])
  t.alike(final.content, [
    { type: 'thinking', thinking: 'Let me see.', signature: '' },
    { type: 'text', text: 'Hello' },
    { type: 'tool_use', id: 'call_1', name: 'get_weather', input: { city: 'Paris' } },
  ])
  t.is(final.stop_reason, 'tool_use')
  t.alike(final.usage, { input_tokens: 5, output_tokens: 7 }, 'usage from message_delta')

  // On the wire: every frame is `event: <name>` and its `data:` of the same type.
  source.script = { tokens: ['Hi'] }
  const res = await fetch(`${url}/v1/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': KEY, 'anthropic-version': '2023-06-01' },
    body: JSON.stringify({
      model: MODEL,
      max_tokens: 5,
      stream: true,
      messages: [{ role: 'user', content: 'x' }],
    }),
  })
  t.is(res.headers.get('content-type'), 'text/event-stream; charset=utf-8')
  const frames = (await res.text()).split('\n\n').filter((f) => f !== '')
  t.ok(
    frames.every((f) => {
      const m = /^event: (\w+)\ndata: (.*)$/.exec(f)
      return m !== null && JSON.parse(m[2] as string).type === m[1]
    }),
    'event names match their data',
  )
  t.is(frames.length, 6, 'message_start, block start, one delta, block stop, message_delta, message_stop')

  const streamed = await client.messages.create({
    model: MODEL,
    max_tokens: 5,
    stream: true,
    messages: [{ role: 'user', content: 'x' }],
  })
  let text = ''
  for await (const e of streamed)
    if (e.type === 'content_block_delta' && e.delta.type === 'text_delta') text += e.delta.text
  t.is(text, 'Hi', 'create({stream: true}) too')
})

test('anthropic-api: keys by x-api-key or bearer; refusals are authentication_error', async (t) => {
  const { url, metrics } = await setup(t)
  const req = { model: MODEL, max_tokens: 5, messages: [{ role: 'user' as const, content: 'x' }] }
  const bearer = new Anthropic({ baseURL: url, apiKey: null, authToken: KEY, maxRetries: 0 })
  t.is((await bearer.messages.create(req)).content.length, 1, 'Authorization: Bearer works too')

  const bad = new Anthropic({ baseURL: url, apiKey: 'sk-wrong', maxRetries: 0 })
  const e = await bad.messages.create(req).catch((err: unknown) => err)
  t.ok(e instanceof Anthropic.AuthenticationError, 'a bad key: 401')
  t.is((e as InstanceType<typeof Anthropic.APIError>).type, 'authentication_error')

  const none = await fetch(`${url}/v1/messages`, { method: 'POST', body: JSON.stringify(req) })
  t.is(none.status, 401)
  t.alike(await none.json(), {
    type: 'error',
    error: { type: 'authentication_error', message: 'an API key is required' },
  })
  t.alike(
    metrics.requests.slice(-2).map((r) => r.code),
    ['ERR_AUTH_INVALID', 'ERR_AUTH_REQUIRED'],
  )
})

test('anthropic-api: errors are Anthropic error objects, before and during a stream', async (t) => {
  const { source, url, client } = await setup(t)
  const user = [{ role: 'user' as const, content: 'x' }]
  const unknown = await client.messages
    .create({ model: 'nope', max_tokens: 5, messages: user })
    .catch((e: unknown) => e)
  t.ok(unknown instanceof Anthropic.NotFoundError, 'unknown model: 404')
  t.is((unknown as InstanceType<typeof Anthropic.APIError>).type, 'not_found_error')

  const post = (body: unknown) =>
    fetch(`${url}/v1/messages`, { method: 'POST', headers: { 'x-api-key': KEY }, body: JSON.stringify(body) })
  const noMax = await post({ model: MODEL, messages: user })
  t.is(noMax.status, 400)
  const body = (await noMax.json()) as { type: string; error: { type: string; message: string } }
  t.is(body.error.type, 'invalid_request_error')
  t.ok(body.error.message.startsWith('max_tokens:'), 'names the field')

  const stray = await post({
    model: MODEL,
    max_tokens: 5,
    messages: [{ role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_x', content: 'ok' }] }],
  })
  t.is(stray.status, 400, 'a tool_result for no earlier tool_use')

  const elsewhere = await fetch(`${url}/v1/messages/count_tokens`, {
    method: 'POST',
    headers: { 'x-api-key': KEY },
  })
  t.is(elsewhere.status, 404)
  t.is(((await elsewhere.json()) as { error: { type: string } }).error.type, 'not_found_error')

  source.script = { failBefore: new MeshError('ERR_BUSY', 'every processor is busy') }
  const busy = await client.messages
    .create({ model: MODEL, max_tokens: 5, messages: user })
    .catch((e: unknown) => e)
  t.is((busy as InstanceType<typeof Anthropic.APIError>).status, 503)
  t.is((busy as InstanceType<typeof Anthropic.APIError>).type, 'overloaded_error')

  source.script = { failBefore: MeshError.unsupported('think', 'is not supported by the echo backend') }
  const refused = await client.messages
    .create({ model: MODEL, max_tokens: 5, thinking: { type: 'adaptive' }, messages: user })
    .catch((e: unknown) => e)
  t.is((refused as InstanceType<typeof Anthropic.APIError>).status, 400)
  t.alike(
    (refused as InstanceType<typeof Anthropic.APIError>).error,
    {
      type: 'error',
      error: { type: 'invalid_request_error', message: 'thinking is not supported by the echo backend' },
    },
    "a backend's refusal names the field as the caller did",
  )

  source.script = { tokens: ['Hel'], failAfter: new MeshError('ERR_STREAM_BROKEN', 'the processor left') }
  const stream = client.messages.stream({ model: MODEL, max_tokens: 5, messages: user })
  const mid = await stream.finalMessage().catch((e: unknown) => e)
  t.ok(mid instanceof Anthropic.APIError, 'an error event mid-stream throws')
  t.is((mid as InstanceType<typeof Anthropic.APIError>).type, 'api_error')
})
