import test from 'brittle'
import type OpenAI from 'openai'
import { MODEL, post, refusal, serveScripted, sseEvents } from './scripted-choices.js'

const WEATHER = {
  type: 'function' as const,
  function: {
    name: 'get_weather',
    description: 'The weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
    strict: true,
  },
}
const TIME = { type: 'function' as const, function: { name: 'get_time' } }
const CALLS = [
  { id: 'call_a', name: 'get_weather', arguments: { city: 'Paris' } },
  { id: 'call_b', name: 'get_time', arguments: {} },
]

/** A conversation that already called a tool and got its answer. */
const HISTORY: OpenAI.ChatCompletionMessageParam[] = [
  { role: 'user', content: 'weather in Oslo?' },
  {
    role: 'assistant',
    content: null,
    tool_calls: [
      { id: 'call_0', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Oslo"}' } },
    ],
    // DeepSeek's field, replayed as the turn's reasoning.
    ...({ reasoning_content: 'I should look it up' } as object),
  },
  { role: 'tool', tool_call_id: 'call_0', content: '-3 C' },
  { role: 'user', content: 'and Paris, and the time?' },
]

const WIRE_HISTORY = [
  { role: 'user', content: 'weather in Oslo?' },
  {
    role: 'assistant',
    content: '',
    thinking: 'I should look it up',
    toolCalls: [{ id: 'call_0', name: 'get_weather', arguments: { city: 'Oslo' } }],
  },
  { role: 'tool', content: '-3 C', toolCallId: 'call_0', toolName: 'get_weather' },
  { role: 'user', content: 'and Paris, and the time?' },
]

test('openai-tools: whole, the source sees the tools, the choice and the replayed turns; the answer is the calls', async (t) => {
  const { source, client } = await serveScripted(t)
  source.script = [{ toolCalls: CALLS }]
  const r = await client.chat.completions.create({
    model: MODEL,
    messages: HISTORY,
    tools: [WEATHER, TIME],
    tool_choice: 'required',
    parallel_tool_calls: true,
  })
  t.alike(source.last, {
    model: MODEL,
    messages: WIRE_HISTORY,
    tools: [
      {
        type: 'function',
        function: {
          name: 'get_weather',
          description: 'The weather in a city',
          parameters: WEATHER.function.parameters,
          strict: true,
        },
      },
      { type: 'function', function: { name: 'get_time' } },
    ],
    toolChoice: 'required',
    parallelToolCalls: true,
  })
  const choice = r.choices[0]
  t.is(choice?.finish_reason, 'tool_calls')
  t.is(choice?.message.content, null, 'only calls: no content')
  t.alike(choice?.message.tool_calls, [
    { id: 'call_a', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } },
    { id: 'call_b', type: 'function', function: { name: 'get_time', arguments: '{}' } },
  ])

  await client.chat.completions.create({
    model: MODEL,
    messages: [{ role: 'user', content: 'hi' }],
    tools: [TIME],
    tool_choice: { type: 'function', function: { name: 'get_time' } },
    parallel_tool_calls: false,
  })
  t.alike(
    source.last && 'messages' in source.last && [source.last.toolChoice, source.last.parallelToolCalls],
    [{ name: 'get_time' }, false],
    'a named function, and no parallel calls',
  )
  await client.chat.completions.create({
    model: MODEL,
    messages: [{ role: 'user', content: 'hi' }],
    parallel_tool_calls: false,
  })
  t.alike(
    source.last,
    { model: MODEL, messages: [{ role: 'user', content: 'hi' }] },
    'parallel_tool_calls without tools asks for nothing',
  )
})

test('openai-tools: streamed, one delta per call, finish tool_calls, then usage', async (t) => {
  const { source, client, url } = await serveScripted(t)
  source.script = [{ pieces: ['Let me ', 'check.'], toolCalls: CALLS }]
  const stream = client.chat.completions.stream({
    model: MODEL,
    messages: HISTORY,
    tools: [WEATHER, TIME],
    stream_options: { include_usage: true },
  })
  const final = await stream.finalChatCompletion()
  const choice = final.choices[0]
  t.is(choice?.message.content, 'Let me check.')
  t.is(choice?.finish_reason, 'tool_calls')
  t.alike(
    choice?.message.tool_calls?.map((c) => ({ id: c.id, name: c.function.name, args: c.function.arguments })),
    [
      { id: 'call_a', name: 'get_weather', args: '{"city":"Paris"}' },
      { id: 'call_b', name: 'get_time', args: '{}' },
    ],
    "the client's stream helper assembles the calls",
  )
  t.alike(final.usage, { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 })

  source.script = [{ toolCalls: CALLS }]
  const res = await post(url, '/v1/chat/completions', {
    model: MODEL,
    messages: HISTORY,
    tools: [WEATHER, TIME],
    stream: true,
    stream_options: { include_usage: true },
  })
  const events = await sseEvents(res)
  t.alike(
    events.map((e) => e.choices),
    [
      [
        {
          index: 0,
          delta: {
            role: 'assistant',
            tool_calls: [
              {
                index: 0,
                id: 'call_a',
                type: 'function',
                function: { name: 'get_weather', arguments: '{"city":"Paris"}' },
              },
              { index: 1, id: 'call_b', type: 'function', function: { name: 'get_time', arguments: '{}' } },
            ],
          },
          logprobs: null,
          finish_reason: null,
        },
      ],
      [{ index: 0, delta: {}, logprobs: null, finish_reason: 'tool_calls' }],
      [],
    ],
    'the calls in one delta with their indexes, the finish, the usage chunk',
  )
  t.alike(events.at(-1)?.usage, { prompt_tokens: 5, completion_tokens: 0, total_tokens: 5 })
})

test('openai-tools: bad or unsupported tool input is a 400 naming the field', async (t) => {
  const { source, url } = await serveScripted(t)
  const user = { role: 'user', content: 'hi' }
  const call = (args: string, type = 'function') => ({
    role: 'assistant',
    content: null,
    tool_calls: [{ id: 'c1', type, function: { name: 'f', arguments: args } }],
  })
  const cases: [string, Record<string, unknown>, { status: number; code: string; param: string }][] = [
    [
      'a tool other than a function',
      { tools: [{ type: 'custom', custom: { name: 'x' } }] },
      { status: 400, code: 'err_unsupported', param: 'tools[0].type' },
    ],
    [
      'a bad function name',
      { tools: [TIME, { type: 'function', function: { name: 'no spaces' } }] },
      { status: 400, code: 'err_bad_request', param: 'tools[1].function.name' },
    ],
    [
      'a tool choice other than a function',
      { tools: [TIME], tool_choice: { type: 'allowed_tools', allowed_tools: { mode: 'auto', tools: [] } } },
      { status: 400, code: 'err_unsupported', param: 'tool_choice' },
    ],
    [
      'replayed arguments that are not JSON',
      { messages: [user, call('{city:')] },
      { status: 400, code: 'err_bad_request', param: 'messages[1].tool_calls[0].function.arguments' },
    ],
    [
      'replayed arguments that are not an object',
      { messages: [user, call('[1]')] },
      { status: 400, code: 'err_bad_request', param: 'messages[1].tool_calls[0].function.arguments' },
    ],
    [
      'a replayed call other than a function',
      { messages: [user, call('{}', 'custom')] },
      { status: 400, code: 'err_unsupported', param: 'messages[1].tool_calls[0].type' },
    ],
    [
      'a tool turn answering no call',
      { messages: [user, { role: 'tool', tool_call_id: 'nope', content: 'x' }] },
      { status: 400, code: 'err_bad_request', param: 'messages[1].tool_call_id' },
    ],
    [
      'a tool turn without its call id',
      { messages: [user, call('{}'), { role: 'tool', content: 'x' }] },
      { status: 400, code: 'err_bad_request', param: 'messages[2].tool_call_id' },
    ],
    [
      'the deprecated functions',
      { functions: [{ name: 'f' }] },
      { status: 400, code: 'err_unsupported', param: 'functions' },
    ],
    [
      'a replayed deprecated function call',
      {
        messages: [user, { role: 'assistant', content: null, function_call: { name: 'f', arguments: '{}' } }],
      },
      { status: 400, code: 'err_unsupported', param: 'messages[1].function_call' },
    ],
  ]
  for (const [what, fields, expected] of cases) {
    const res = await post(url, '/v1/chat/completions', { model: MODEL, messages: [user], ...fields })
    t.alike(await refusal(res), expected, what)
  }
  t.is(source.requests.length, 0, 'none reached the source')
})

test("openai-tools: the client's tool runner loops: its replayed call and tool answer reach the source as the wire's turns", async (t) => {
  const { source, client } = await serveScripted(t)
  source.queue = [[{ toolCalls: [CALLS[0] as (typeof CALLS)[0]] }], [{ pieces: ['Sunny ', 'in Paris.'] }]]
  const cities: string[] = []
  const runner = client.chat.completions.runTools({
    model: MODEL,
    messages: [{ role: 'user', content: 'weather in Paris?' }],
    stream: true,
    tools: [
      {
        type: 'function',
        function: {
          name: 'get_weather',
          description: 'The weather in a city',
          parameters: WEATHER.function.parameters,
          parse: (s: string) => JSON.parse(s) as { city: string },
          function: ({ city }: { city: string }) => {
            cities.push(city)
            return 'sunny'
          },
        },
      },
    ],
  })
  t.is(await runner.finalContent(), 'Sunny in Paris.')
  t.alike(cities, ['Paris'], 'the runner called the function with the parsed arguments')
  t.is(source.requests.length, 2)
  const second = source.requests[1]
  t.alike(second && 'messages' in second && second.messages, [
    { role: 'user', content: 'weather in Paris?' },
    {
      role: 'assistant',
      content: '',
      toolCalls: [{ id: 'call_a', name: 'get_weather', arguments: { city: 'Paris' } }],
    },
    { role: 'tool', content: 'sunny', toolCallId: 'call_a', toolName: 'get_weather' },
  ])
})

test('openai-tools: streamed, calls the source gave in its result only go out before each finish, once each', async (t) => {
  const { source, url, client } = await serveScripted(t)
  const toolCalls = (e: Record<string, unknown>) =>
    (e.choices as { delta: { tool_calls?: { index: number; id: string }[] } }[])[0]?.delta.tool_calls
  source.script = [{ pieces: ['Let me ', 'check.'], toolCalls: CALLS, streamedCalls: 1 }]
  const events = await sseEvents(
    await post(url, '/v1/chat/completions', {
      model: MODEL,
      messages: HISTORY,
      tools: [WEATHER, TIME],
      stream: true,
    }),
  )
  t.alike(
    events
      .map(toolCalls)
      .filter((c) => c !== undefined)
      .map((cs) => cs.map((c) => [c.index, c.id])),
    [[[0, 'call_a']], [[1, 'call_b']]],
    'the streamed call once, the unsent one after it with the next index',
  )
  t.alike(events.at(-1)?.choices, [{ index: 0, delta: {}, logprobs: null, finish_reason: 'tool_calls' }])

  source.script = [{ toolCalls: CALLS, streamedCalls: 0 }]
  const onlyCalls = await sseEvents(
    await post(url, '/v1/chat/completions', {
      model: MODEL,
      messages: HISTORY,
      tools: [WEATHER, TIME],
      stream: true,
    }),
  )
  t.alike(
    onlyCalls.map((e) => e.choices),
    [
      [
        {
          index: 0,
          delta: {
            role: 'assistant',
            tool_calls: [
              {
                index: 0,
                id: 'call_a',
                type: 'function',
                function: { name: 'get_weather', arguments: '{"city":"Paris"}' },
              },
              { index: 1, id: 'call_b', type: 'function', function: { name: 'get_time', arguments: '{}' } },
            ],
          },
          logprobs: null,
          finish_reason: null,
        },
      ],
      [{ index: 0, delta: {}, logprobs: null, finish_reason: 'tool_calls' }],
    ],
    'calls in the result only: one delta with the role and every call, then the finish',
  )

  source.script = [
    { pieces: ['a'], toolCalls: [CALLS[1] as (typeof CALLS)[1]], streamedCalls: 0 },
    { pieces: ['b'] },
  ]
  const final = await client.chat.completions
    .stream({ model: MODEL, messages: HISTORY, tools: [WEATHER, TIME], n: 2 })
    .finalChatCompletion()
  t.alike(
    final.choices.map((c) => [c.finish_reason, c.message.tool_calls?.map((k) => k.id)]),
    [
      ['tool_calls', ['call_b']],
      ['stop', undefined],
    ],
    "with n, each choice's result-only calls reach the client's stream helper",
  )
})
