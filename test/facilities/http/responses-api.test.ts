import type { Test } from 'brittle'
import test from 'brittle'
import OpenAI from 'openai'
import { MeshError } from '../../../kernel/errors.js'
import { CountedMetrics, KEY, MODEL, ScriptedSource, serveGateway } from './scripted-source.js'

async function setup(t: Test) {
  const source = new ScriptedSource()
  const metrics = new CountedMetrics()
  const url = await serveGateway(t, source, metrics)
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: KEY, maxRetries: 0 })
  return { source, metrics, url, client }
}

const CALL = { id: 'call_1', name: 'get_weather', arguments: { city: 'Paris' } }
const WEATHER = {
  type: 'function' as const,
  name: 'get_weather',
  description: 'The weather in a city',
  parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  strict: true,
}

test('responses-api: a whole response, and the wire request it became', async (t) => {
  const { source, metrics, client } = await setup(t)
  const r = await client.responses.create({
    model: MODEL,
    instructions: 'be brief',
    input: 'hi',
    max_output_tokens: 100,
    temperature: 0.5,
    top_p: 0.9,
    store: true,
    metadata: { app: 'test' },
  })
  t.ok(r.id.startsWith('resp_'), 'a Responses id')
  t.is(r.object, 'response')
  t.is(r.status, 'completed')
  t.is(r.model, MODEL)
  t.is((r as unknown as { store: boolean }).store, false, 'nothing is stored, and the answer says so')
  t.is(r.output_text, 'Hello', "the SDK's output_text adds up the text")
  t.is(r.output.length, 1)
  const msg = r.output[0] as OpenAI.Responses.ResponseOutputMessage
  t.is(msg.type, 'message')
  t.is(msg.role, 'assistant')
  t.is(msg.status, 'completed')
  t.alike(msg.content, [{ type: 'output_text', text: 'Hello', annotations: [], logprobs: [] }])
  t.alike(r.usage, {
    input_tokens: 5,
    input_tokens_details: { cached_tokens: 0 },
    output_tokens: 7,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: 12,
  })
  t.is(r.instructions, 'be brief', 'request fields echoed')
  t.is(r.max_output_tokens, 100)
  t.alike(r.metadata, { app: 'test' })
  t.alike(source.last, {
    model: MODEL,
    messages: [
      { role: 'system', content: 'be brief' },
      { role: 'user', content: 'hi' },
    ],
    options: { num_predict: 100, temperature: 0.5, top_p: 0.9 },
  })
  t.alike(metrics.requests, [{ api: 'responses', code: 'ok' }], 'counted under the responses label')

  source.script = { tokens: ['Hel'], doneReason: 'length' }
  const cut = await client.responses.create({ model: MODEL, input: 'hi', max_output_tokens: 1 })
  t.is(cut.status, 'incomplete')
  t.alike(cut.incomplete_details, { reason: 'max_output_tokens' })
})

test('responses-api: function calls and their outputs, both ways', async (t) => {
  const { source, client } = await setup(t)
  source.script = { tokens: [], toolCalls: [CALL] }
  const r = await client.responses.create({
    model: MODEL,
    tools: [WEATHER],
    tool_choice: { type: 'function', name: 'get_weather' },
    parallel_tool_calls: false,
    input: [
      { role: 'developer', content: 'use tools' },
      { role: 'user', content: [{ type: 'input_text', text: 'weather in Rome?' }] },
      { type: 'reasoning', id: 'rs_0', summary: [{ type: 'summary_text', text: 'need the tool' }] },
      { type: 'function_call', call_id: 'call_a', name: 'get_weather', arguments: '{"city":"Rome"}' },
      { type: 'function_call_output', call_id: 'call_a', output: 'sunny' },
      {
        type: 'message',
        id: 'msg_0',
        status: 'completed',
        role: 'assistant',
        content: [{ type: 'output_text', text: 'Sunny.', annotations: [] }],
      },
      { role: 'user', content: 'and Paris?' },
    ],
  })
  t.alike(
    r.output.map((o) => ({ ...o })),
    [
      {
        type: 'function_call',
        id: r.output[0]?.id,
        call_id: 'call_1',
        name: 'get_weather',
        arguments: '{"city":"Paris"}',
        status: 'completed',
      },
    ],
  )
  t.ok(r.output[0]?.id?.startsWith('fc_'), 'a function call item id')
  t.is(r.output_text, '', 'no text')
  t.alike(source.last, {
    model: MODEL,
    messages: [
      { role: 'system', content: 'use tools' },
      { role: 'user', content: 'weather in Rome?' },
      {
        role: 'assistant',
        content: '',
        thinking: 'need the tool',
        toolCalls: [{ id: 'call_a', name: 'get_weather', arguments: { city: 'Rome' } }],
      },
      { role: 'tool', content: 'sunny', toolCallId: 'call_a', toolName: 'get_weather' },
      { role: 'assistant', content: 'Sunny.' },
      { role: 'user', content: 'and Paris?' },
    ],
    tools: [
      {
        type: 'function',
        function: {
          name: 'get_weather',
          description: WEATHER.description,
          parameters: WEATHER.parameters,
          strict: true,
        },
      },
    ],
    toolChoice: { name: 'get_weather' },
    parallelToolCalls: false,
  })
  for (const choice of ['auto', 'none', 'required'] as const) {
    await client.responses.create({ model: MODEL, tools: [WEATHER], tool_choice: choice, input: 'x' })
    t.is(source.last?.toolChoice, choice, `tool_choice ${choice}`)
  }
})

test('responses-api: text.format and reasoning reach the source; reasoning comes back as an item', async (t) => {
  const { source, client } = await setup(t)
  const schema = {
    type: 'object',
    properties: { n: { type: 'integer' } },
    required: ['n'],
    additionalProperties: false,
  }
  await client.responses.create({
    model: MODEL,
    input: '2+2?',
    text: { format: { type: 'json_schema', name: 'answer', schema, strict: true } },
  })
  t.alike(source.last?.format, { type: 'json', schema }, 'json_schema: format.schema')
  await client.responses.create({ model: MODEL, input: 'x', text: { format: { type: 'json_object' } } })
  t.alike(source.last?.format, { type: 'json' }, 'json_object: any JSON')
  await client.responses.create({ model: MODEL, input: 'x', text: { format: { type: 'text' } } })
  t.is(source.last?.format, undefined, 'text: no format')

  source.script = { thinking: ['Hmm, ', 'easy.'], tokens: ['4'] }
  const r = await client.responses.create({ model: MODEL, input: '2+2?', reasoning: { effort: 'high' } })
  t.is(source.last?.think, 'high')
  t.is(r.output[0]?.type, 'reasoning')
  t.alike((r.output[0] as OpenAI.Responses.ResponseReasoningItem).summary, [
    { type: 'summary_text', text: 'Hmm, easy.' },
  ])
  t.is(r.output_text, '4')
  t.alike(r.reasoning, { effort: 'high', summary: null })
  await client.responses.create({ model: MODEL, input: 'x', reasoning: { effort: 'none' } })
  t.is(source.last?.think, false, 'effort none: no reasoning')
})

test('responses-api: a stream with reasoning, text and a function call, as the SDK reads it', async (t) => {
  const { source, url, client } = await setup(t)
  source.script = { thinking: ['Let ', 'me see.'], tokens: ['Hel', 'lo'], toolCalls: [CALL] }
  const stream = await client.responses.create({
    model: MODEL,
    input: 'weather?',
    tools: [WEATHER],
    reasoning: { effort: 'low' },
    stream: true,
  })
  const events: OpenAI.Responses.ResponseStreamEvent[] = []
  for await (const e of stream) events.push(e)
  t.alike(
    events.map((e) => e.type),
    [
      'response.created',
      'response.in_progress',
      'response.output_item.added',
      'response.reasoning_summary_part.added',
      'response.reasoning_summary_text.delta',
      'response.reasoning_summary_text.delta',
      'response.reasoning_summary_text.done',
      'response.reasoning_summary_part.done',
      'response.output_item.done',
      'response.output_item.added',
      'response.content_part.added',
      'response.output_text.delta',
      'response.output_text.delta',
      'response.output_text.done',
      'response.content_part.done',
      'response.output_item.done',
      'response.output_item.added',
      'response.function_call_arguments.delta',
      'response.function_call_arguments.done',
      'response.output_item.done',
      'response.completed',
    ],
  )
  t.alike(
    events.map((e) => e.sequence_number),
    events.map((_, i) => i),
    'sequence numbers count up from 0',
  )
  const done = events.at(-1) as OpenAI.Responses.ResponseCompletedEvent
  t.alike(
    done.response.output.map((o) => o.type),
    ['reasoning', 'message', 'function_call'],
  )
  t.is(done.response.usage?.total_tokens, 12)

  // The SDK's own accumulation of the events gives the same response.
  const helper = client.responses.stream({ model: MODEL, input: 'weather?', tools: [WEATHER] })
  const final = await helper.finalResponse()
  t.is(final.output_text, 'Hello')
  // Ids aside (another request), and the SDK's own `parsed` fields.
  const SKIP = new Set(['id', 'parsed', 'parsed_arguments'])
  const plain = (output: unknown) =>
    JSON.parse(JSON.stringify(output, (k, v) => (SKIP.has(k) ? undefined : v)))
  t.alike(
    plain(final.output),
    plain(done.response.output),
    'accumulated output equals the completed response',
  )

  // On the wire: every frame is `event: <name>` and its `data:` of the same type.
  source.script = { tokens: ['Hi'] }
  const res = await fetch(`${url}/v1/responses`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
    body: JSON.stringify({ model: MODEL, input: 'x', stream: true }),
  })
  t.is(res.headers.get('content-type'), 'text/event-stream; charset=utf-8')
  const frames = (await res.text()).split('\n\n').filter((f) => f !== '')
  t.ok(
    frames.every((f) => {
      const m = /^event: ([\w.]+)\ndata: (.*)$/.exec(f)
      return m !== null && JSON.parse(m[2] as string).type === m[1]
    }),
    'event names match their data',
  )
})

test('responses-api: errors are OpenAI error objects, before and during a stream', async (t) => {
  const { source, url, client } = await setup(t)
  const prev = await client.responses
    .create({ model: MODEL, input: 'x', previous_response_id: 'resp_earlier' })
    .catch((e: unknown) => e)
  t.ok(prev instanceof OpenAI.BadRequestError, 'previous_response_id: 400')
  t.is((prev as InstanceType<typeof OpenAI.APIError>).code, 'err_unsupported')
  t.is((prev as InstanceType<typeof OpenAI.APIError>).param, 'previous_response_id')

  const unknown = await client.responses.create({ model: 'nope', input: 'x' }).catch((e: unknown) => e)
  t.ok(unknown instanceof OpenAI.NotFoundError, 'unknown model: 404')

  const bad = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'sk-wrong', maxRetries: 0 })
  const refused = await bad.responses.create({ model: MODEL, input: 'x' }).catch((e: unknown) => e)
  t.ok(refused instanceof OpenAI.AuthenticationError, 'a bad key: 401')
  t.is((refused as InstanceType<typeof OpenAI.APIError>).code, 'invalid_api_key')
  const viaApiKeyHeader = await fetch(`${url}/v1/responses`, {
    method: 'POST',
    headers: { 'x-api-key': KEY },
    body: JSON.stringify({ model: MODEL, input: 'x' }),
  })
  t.is(viaApiKeyHeader.status, 401, 'x-api-key counts on Anthropic paths only')

  const stored = await fetch(`${url}/v1/responses/resp_x`, { headers: { authorization: `Bearer ${KEY}` } })
  t.is(stored.status, 404, 'no stored responses to get')

  const noInput = await client.responses.create({ model: MODEL } as never).catch((e: unknown) => e)
  t.is((noInput as InstanceType<typeof OpenAI.APIError>).param, 'input', 'a missing field is named')
  const empty = await client.responses.create({ model: MODEL, input: [] }).catch((e: unknown) => e)
  t.ok(empty instanceof OpenAI.BadRequestError, 'nothing to answer: 400')
  t.is((empty as InstanceType<typeof OpenAI.APIError>).param, 'input')
  const badArgs = await client.responses
    .create({ model: MODEL, input: [{ type: 'function_call', call_id: 'c', name: 'f', arguments: '[1' }] })
    .catch((e: unknown) => e)
  t.is((badArgs as InstanceType<typeof OpenAI.APIError>).param, 'input[0].arguments', 'arguments not JSON')

  source.script = { failBefore: MeshError.unsupported('format', 'is not supported by the echo backend') }
  const backendRefused = await client.responses
    .create({ model: MODEL, input: 'x', text: { format: { type: 'json_object' } } })
    .catch((e: unknown) => e)
  t.is(
    (backendRefused as InstanceType<typeof OpenAI.APIError>).param,
    'text.format',
    "a backend's refusal, as the caller named it",
  )
  t.is(
    (backendRefused as InstanceType<typeof OpenAI.APIError>).message,
    '400 text.format is not supported by the echo backend',
  )

  source.script = { tokens: ['Hel'], failAfter: new MeshError('ERR_STREAM_BROKEN', 'the processor left') }
  const stream = await client.responses.create({ model: MODEL, input: 'x', stream: true })
  const types: string[] = []
  let failed: OpenAI.Responses.ResponseFailedEvent | undefined
  for await (const e of stream) {
    types.push(e.type)
    if (e.type === 'response.failed') failed = e
  }
  t.is(types.at(-1), 'response.failed', 'a failure mid-stream ends it with response.failed')
  t.is(failed?.response.status, 'failed')
  t.alike(failed?.response.error, { code: 'err_stream_broken', message: 'the processor left' } as never)
})
