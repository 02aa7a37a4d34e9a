import test from 'brittle'
import { MODEL, post, refusal, serveScripted, sseEvents } from './scripted-choices.js'

const user = [{ role: 'user' as const, content: 'hi' }]
const CALL = { id: 'call_1', name: 'get_time', arguments: {} }
const TOOLS = [{ type: 'function' as const, function: { name: 'get_time' } }]

type Choice = { index: number; delta: Record<string, unknown>; finish_reason: string | null }

test('openai-choices: n reaches the source; every choice is rendered whole, usage is the sums', async (t) => {
  const { source, client } = await serveScripted(t)
  source.script = [{ pieces: ['a', 'b'] }, { pieces: ['c'], doneReason: 'length' }, { toolCalls: [CALL] }]
  const r = await client.chat.completions.create({ model: MODEL, messages: user, n: 3, tools: TOOLS })
  t.alike(source.last, {
    model: MODEL,
    messages: [{ role: 'user', content: 'hi' }],
    tools: TOOLS,
    n: 3,
  })
  t.alike(
    r.choices.map((c) => [c.index, c.message.content, c.finish_reason, c.message.tool_calls?.length ?? 0]),
    [
      [0, 'ab', 'stop', 0],
      [1, 'c', 'length', 0],
      [2, null, 'tool_calls', 1],
    ],
  )
  t.alike(r.usage, { prompt_tokens: 15, completion_tokens: 3, total_tokens: 18 })

  await client.chat.completions.create({ model: MODEL, messages: user, n: 1 })
  t.absent(source.last && 'n' in source.last, 'n: 1 is the default, left out')
})

test('openai-choices: streamed, each chunk has its choice index, each choice its role and finish', async (t) => {
  const { source, client, url } = await serveScripted(t)
  source.script = [{ pieces: ['a', 'b'] }, { pieces: [] }, { pieces: ['c'], toolCalls: [CALL] }]
  const res = await post(url, '/v1/chat/completions', {
    model: MODEL,
    messages: user,
    tools: TOOLS,
    n: 3,
    stream: true,
    stream_options: { include_usage: true },
  })
  const events = await sseEvents(res)
  const choices = events.flatMap((e) => e.choices as Choice[])
  t.alike(
    choices.map((c) => [c.index, c.delta, c.finish_reason]),
    [
      [0, { role: 'assistant', content: 'a' }, null],
      [2, { role: 'assistant', content: 'c' }, null],
      [0, { content: 'b' }, null],
      [
        2,
        {
          tool_calls: [
            { index: 0, id: 'call_1', type: 'function', function: { name: 'get_time', arguments: '{}' } },
          ],
        },
        null,
      ],
      [0, {}, 'stop'],
      [1, { role: 'assistant', content: '' }, null],
      [1, {}, 'stop'],
      [2, {}, 'tool_calls'],
    ],
    'the pieces as they came; a choice that said nothing still names its role',
  )
  t.alike(events.at(-1)?.usage, { prompt_tokens: 15, completion_tokens: 3, total_tokens: 18 })

  source.script = [{ pieces: ['x', 'y'] }, { pieces: ['z'] }]
  const final = await client.chat.completions
    .stream({ model: MODEL, messages: user, n: 2 })
    .finalChatCompletion()
  t.alike(
    final.choices.map((c) => [c.index, c.message.content, c.finish_reason]),
    [
      [0, 'xy', 'stop'],
      [1, 'z', 'stop'],
    ],
    "the client's stream helper assembles both",
  )
})

test('openai-choices: n out of range is a 400 naming it', async (t) => {
  const { source, url } = await serveScripted(t)
  for (const n of [0, 9, 1.5]) {
    const chat = await post(url, '/v1/chat/completions', { model: MODEL, messages: user, n })
    t.alike(await refusal(chat), { status: 400, code: 'err_bad_request', param: 'n' }, `chat n: ${n}`)
    const legacy = await post(url, '/v1/completions', { model: MODEL, prompt: 'a', n })
    t.alike(await refusal(legacy), { status: 400, code: 'err_bad_request', param: 'n' }, `legacy n: ${n}`)
  }
  t.is(source.requests.length, 0)
})

const LOGPROBS = [
  { token: 'Hel', logprob: -0.5, top: [{ token: 'Hel', logprob: -0.5 }] },
  { token: 'lo', logprob: -0.25, top: [{ token: 'lo', logprob: -0.25 }] },
]

test('openai-choices: legacy completions with logprobs, n and penalties, whole and streamed', async (t) => {
  const { source, client, url } = await serveScripted(t)
  source.script = [
    { pieces: ['Hel', 'lo'], logprobs: LOGPROBS },
    { pieces: ['Hi'], logprobs: [{ token: 'Hi', logprob: -1, top: [] }], doneReason: 'length' },
  ]
  const whole = await client.completions.create({
    model: MODEL,
    prompt: 'abc',
    n: 2,
    best_of: 1,
    logprobs: 1,
    presence_penalty: 0.25,
    frequency_penalty: 0.5,
  })
  t.alike(source.last, {
    model: MODEL,
    prompt: 'abc',
    raw: true,
    options: { presence_penalty: 0.25, frequency_penalty: 0.5, num_predict: 16 },
    logprobs: 1,
    n: 2,
  })
  t.alike(
    whole.choices.map((c) => [c.index, c.text, c.finish_reason, c.logprobs]),
    [
      [
        0,
        'Hello',
        'stop',
        {
          tokens: ['Hel', 'lo'],
          token_logprobs: [-0.5, -0.25],
          top_logprobs: [{ Hel: -0.5 }, { lo: -0.25 }],
          text_offset: [0, 3],
        },
      ],
      [1, 'Hi', 'length', { tokens: ['Hi'], token_logprobs: [-1], top_logprobs: [{}], text_offset: [0] }],
    ],
  )
  t.alike(whole.usage, { prompt_tokens: 10, completion_tokens: 3, total_tokens: 13 })

  source.script = [{ pieces: ['Hel', 'lo'], logprobs: LOGPROBS.slice(0, 1) }]
  const res = await post(url, '/v1/completions', {
    model: MODEL,
    prompt: 'abc',
    logprobs: 0,
    stream: true,
    stream_options: { include_usage: true },
  })
  const events = await sseEvents(res)
  t.alike(
    events.map((e) => e.choices),
    [
      [{ index: 0, text: 'Hel', logprobs: null, finish_reason: null }],
      [{ index: 0, text: 'lo', logprobs: null, finish_reason: null }],
      [
        {
          index: 0,
          text: '',
          logprobs: {
            tokens: ['Hel'],
            token_logprobs: [-0.5],
            top_logprobs: [{ Hel: -0.5 }],
            text_offset: [0],
          },
          finish_reason: null,
        },
      ],
      [{ index: 0, text: '', logprobs: null, finish_reason: 'stop' }],
      [],
    ],
  )
  t.is(source.last?.logprobs, 0)
  t.alike(events.at(-1)?.usage, { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 })
})

test('openai-choices: legacy echo, suffix, best_of and logit_bias are refused naming them', async (t) => {
  const { source, url } = await serveScripted(t)
  const cases: [Record<string, unknown>, string][] = [
    [{ echo: true }, 'echo'],
    [{ suffix: 'end' }, 'suffix'],
    [{ best_of: 2 }, 'best_of'],
    [{ logit_bias: { 1: 1 } }, 'logit_bias'],
  ]
  for (const [fields, param] of cases) {
    const res = await post(url, '/v1/completions', { model: MODEL, prompt: 'a', ...fields })
    t.alike(await refusal(res), { status: 400, code: 'err_unsupported', param }, param)
  }
  t.is(source.requests.length, 0)
})
