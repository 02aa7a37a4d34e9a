/**
 * The Ollama dialect's tools, output formats, reasoning and log probabilities over a scripted
 * source: what the source is asked (the wire's shapes), and Ollama's JSON for the answer, whole
 * and as NDJSON frames; bad values 400, what no source here can honour ERR_UNSUPPORTED.
 */
import test from 'brittle'
import { MeshError } from '../../../kernel/errors.js'
import type { ChatRequest, GenerateRequest } from '../../../kernel/wire.js'
import { expectError, type Json, lines, post } from './ollama-fixture.js'
import { MODEL, serveScripted } from './ollama-scripted-source.js'

const WEATHER = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
}
const SCHEMA = { type: 'object', properties: { city: { type: 'string' } } }
const USER = [{ role: 'user', content: 'Weather in Paris?' }]

const TOOL_CALLS = [
  { id: 'call_a', function: { index: 0, name: 'get_weather', arguments: { city: 'Paris' } } },
  { id: 'call_b', function: { index: 1, name: 'get_time', arguments: { zone: 'CET' } } },
]
const LOGPROBS = [
  {
    token: 'Let me ',
    logprob: -0.25,
    bytes: [76, 101, 116, 32, 109, 101, 32],
    top_logprobs: [
      { token: 'Let me ', logprob: -0.25 },
      { token: 'I', logprob: -2 },
    ],
  },
  { token: 'check.', logprob: -0.5, top_logprobs: [{ token: 'check.', logprob: -0.5 }] },
]

test('ollama-api answer parts: /api/chat passes tools, format, think, logprobs, options and tool turns to the source', async (t) => {
  const { url, source } = await serveScripted(t)
  const res = await post(`${url}/api/chat`, {
    model: MODEL,
    stream: false,
    messages: [
      ...USER,
      {
        role: 'assistant',
        content: '',
        thinking: 'Look it up.',
        tool_calls: [
          { id: 'call_1', function: { index: 0, name: 'get_weather', arguments: { city: 'Paris' } } },
          { function: { name: 'get_weather', arguments: { city: 'Oslo' } } },
        ],
      },
      { role: 'tool', content: '21', tool_name: 'get_weather', tool_call_id: 'call_1' },
    ],
    tools: [WEATHER],
    format: SCHEMA,
    think: 'low',
    logprobs: true,
    top_logprobs: 2,
    options: { presence_penalty: 0.5, frequency_penalty: 0.25, repeat_last_n: 16 },
    keep_alive: '5m',
  })
  t.is(res.status, 200)
  const wire = source.last as ChatRequest
  t.alike(wire.tools, [WEATHER], 'wire tools')
  t.alike(wire.format, { type: 'json', schema: SCHEMA }, 'a schema format')
  t.is(wire.think, 'low')
  t.is(wire.logprobs, 2, 'logprobs with top_logprobs alternatives')
  t.alike(wire.options, { presence_penalty: 0.5, frequency_penalty: 0.25, repeat_last_n: 16 })
  const [user, assistant, tool] = wire.messages
  t.alike(user, { role: 'user', content: 'Weather in Paris?' })
  t.is(assistant?.thinking, 'Look it up.')
  t.alike(assistant?.toolCalls?.[0], { id: 'call_1', name: 'get_weather', arguments: { city: 'Paris' } })
  const made = assistant?.toolCalls?.[1]?.id ?? ''
  t.ok(/^call_[0-9a-f]{24}$/.test(made), `a replayed call without an id gets one: ${made}`)
  t.alike(tool, { role: 'tool', content: '21', toolName: 'get_weather', toolCallId: 'call_1' })

  const body = (await res.json()) as Json
  t.alike(body.message, {
    role: 'assistant',
    content: 'Let me check.',
    thinking: 'Paris is in France.',
    tool_calls: TOOL_CALLS,
  })
  t.alike(body.logprobs, LOGPROBS)
  t.is(body.done, true)
  t.is(body.done_reason, 'stop')

  await post(`${url}/api/chat`, { model: MODEL, messages: USER, stream: false, format: 'json', think: false })
  const plain = source.last as ChatRequest
  t.alike(plain.format, { type: 'json' }, '"json": any JSON')
  t.is(plain.think, false, 'think false is passed on')
  t.absent(plain.tools, 'no tools')
  t.absent(plain.logprobs, 'no logprobs')
  await post(`${url}/api/chat`, { model: MODEL, messages: USER, stream: false, top_logprobs: 3, format: '' })
  t.absent(
    (source.last as ChatRequest).logprobs,
    'top_logprobs without logprobs asks for nothing, as in Ollama',
  )
  t.absent((source.last as ChatRequest).format, 'an empty format asks for nothing')
})

test('ollama-api answer parts: a streamed chat sends thinking, logprobs and each tool call in frames of their own', async (t) => {
  const { url, source } = await serveScripted(t)
  const request = {
    model: MODEL,
    messages: USER,
    tools: [WEATHER],
    think: true,
    logprobs: true,
    top_logprobs: 2,
  }
  const frames = await lines(await post(`${url}/api/chat`, request))
  const last = frames.pop() as Json
  t.ok(frames.every((f) => f.done === false && f.model === MODEL))
  t.alike(
    frames.map((f) => ({ message: f.message, ...(f.logprobs ? { logprobs: f.logprobs } : {}) })),
    [
      { message: { role: 'assistant', content: '', thinking: 'Paris is ' } },
      { message: { role: 'assistant', content: '', thinking: 'in France.' } },
      { message: { role: 'assistant', content: '' }, logprobs: [LOGPROBS[0]] },
      { message: { role: 'assistant', content: 'Let me ' } },
      { message: { role: 'assistant', content: '' }, logprobs: [LOGPROBS[1]] },
      { message: { role: 'assistant', content: 'check.' } },
      { message: { role: 'assistant', content: '', tool_calls: [TOOL_CALLS[0]] } },
      { message: { role: 'assistant', content: '', tool_calls: [TOOL_CALLS[1]] } },
    ],
  )
  t.alike(last.message, { role: 'assistant', content: '' }, 'the last frame repeats no call')
  t.is(last.done, true)
  t.is(last.eval_count, 4)

  source.script = { ...source.script, callsInResultOnly: true }
  const fallback = await lines(
    await post(`${url}/api/chat`, { model: MODEL, messages: USER, tools: [WEATHER] }),
  )
  t.ok(
    fallback.slice(0, -1).every((f) => !(f.message as Json).tool_calls),
    'no call frames from a source that gave none',
  )
  t.alike(
    ((fallback.at(-1) as Json).message as Json).tool_calls,
    TOOL_CALLS,
    'calls given in the result only go in the last frame',
  )
})

test('ollama-api answer parts: /api/generate with format, think and logprobs, whole and streamed', async (t) => {
  const { url, source } = await serveScripted(t)
  const whole = await post(`${url}/api/generate`, {
    model: MODEL,
    prompt: 'p',
    stream: false,
    format: 'json',
    think: true,
    logprobs: true,
  })
  const wire = source.last as GenerateRequest
  t.alike(wire.format, { type: 'json' })
  t.is(wire.think, true)
  t.is(wire.logprobs, 0, 'logprobs without top_logprobs: no alternatives')
  const body = (await whole.json()) as Json
  t.is(body.response, 'Let me check.')
  t.is(body.thinking, 'Paris is in France.', 'generate: thinking at the top level')
  t.alike(body.logprobs, LOGPROBS)

  const frames = await lines(
    await post(`${url}/api/generate`, { model: MODEL, prompt: 'p', think: 'high', format: SCHEMA }),
  )
  t.alike((source.last as GenerateRequest).format, { type: 'json', schema: SCHEMA })
  t.alike(
    frames.slice(0, 2).map((f) => [f.response, f.thinking]),
    [
      ['', 'Paris is '],
      ['', 'in France.'],
    ],
    'thinking frames with an empty response',
  )
  t.is(frames.map((f) => f.response).join(''), 'Let me check.')
  t.is(frames.at(-1)?.done, true)
  t.absent(frames.at(-1)?.thinking, 'the last frame repeats no reasoning')
})

test('ollama-api answer parts: bad values are 400, what the source cannot honour ERR_UNSUPPORTED', async (t) => {
  const { url, source } = await serveScripted(t)
  const asked = source.requests.length
  const bad: Array<[string, Json, RegExp]> = [
    ['format "yaml"', { format: 'yaml' }, /invalid format/],
    ['format a number', { format: 5 }, /invalid format/],
    ['format an array', { format: ['json'] }, /invalid format/],
    ['think "extreme"', { think: 'extreme' }, /think/],
    ['top_logprobs over 20', { logprobs: true, top_logprobs: 21 }, /top_logprobs/],
    [
      'a tool that is not a function',
      { tools: [{ type: 'retrieval', function: { name: 'f' } }] },
      /tools\.0\.type/,
    ],
    ['a tool without a name', { tools: [{ type: 'function', function: {} }] }, /tools\.0\.function\.name/],
    [
      'a replayed call whose arguments are a string',
      {
        messages: [
          ...USER,
          { role: 'assistant', content: '', tool_calls: [{ function: { name: 'f', arguments: '{}' } }] },
        ],
      },
      /messages\.1\.tool_calls\.0\.function\.arguments/,
    ],
  ]
  for (const [what, extra, pattern] of bad) {
    await expectError(
      t,
      await post(`${url}/api/chat`, { model: MODEL, messages: USER, ...extra }),
      400,
      what,
      pattern,
    )
  }
  await expectError(
    t,
    await post(`${url}/api/generate`, { model: MODEL, prompt: 'p', format: 'xml' }),
    400,
    'generate: format "xml"',
    /invalid format/,
  )

  await expectError(
    t,
    await post(`${url}/api/chat`, { model: MODEL, messages: USER, _debug_render_only: true }),
    400,
    'Ollama’s debug rendering',
    /^_debug_render_only is not supported/,
  )
  t.is(source.requests.length, asked, 'no bad or refused request reached the source')

  source.refuse = MeshError.unsupported('tools', 'is not supported by the test backend')
  await expectError(
    t,
    await post(`${url}/api/chat`, { model: MODEL, messages: USER, tools: [WEATHER] }),
    400,
    'a source that refuses tools',
    /^tools is not supported by the test backend$/,
  )
})
