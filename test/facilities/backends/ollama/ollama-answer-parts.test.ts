/**
 * The Ollama backend passes tools, output formats, reasoning and log probabilities through,
 * against a scripted Ollama-protocol server: what the request body carries, and how tool
 * calls, thinking and logprobs in the answer come back (ids made, deltas in order).
 */
import { createServer } from 'node:http'
import type { Test } from 'brittle'
import test from 'brittle'
import { OllamaBackend } from '../../../../facilities/backends/ollama/ollama.backend.js'
import type { GenerationDelta, ToolDefinition } from '../../../../kernel/wire.js'
import { rejectsWith } from '../../../helpers/assert.js'

type Json = Record<string, unknown>

interface Scripted {
  url: string
  /** Bodies of the generation requests, in order. */
  bodies: Json[]
  /** The NDJSON frames the next answers are made of. */
  frames: Json[]
}

async function scripted(t: Test): Promise<Scripted> {
  const state: Scripted = { url: '', bodies: [], frames: [] }
  const server = createServer((req, res) => {
    let raw = ''
    req.setEncoding('utf8')
    req.on('data', (d: string) => {
      raw += d
    })
    req.on('end', () => {
      if (req.url === '/api/version') {
        res.writeHead(200, { 'Content-Type': 'application/json' })
        res.end('{"version":"0.13.0"}')
        return
      }
      state.bodies.push(JSON.parse(raw) as Json)
      res.writeHead(200, { 'Content-Type': 'application/x-ndjson' })
      res.end(state.frames.map((f) => `${JSON.stringify(f)}\n`).join(''))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    server.closeAllConnections()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })
  const addr = server.address()
  state.url = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`
  return state
}

async function backendFor(t: Test, url: string): Promise<OllamaBackend> {
  const backend = new OllamaBackend({ host: url })
  t.teardown(() => backend.close())
  await backend.open()
  return backend
}

const WEATHER: ToolDefinition = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
}
const SCHEMA = { type: 'object', properties: { n: { type: 'integer' } }, required: ['n'] }

function chatFrame(message: Json, extra: Json = {}): Json {
  return { model: 'm', message: { role: 'assistant', content: '', ...message }, done: false, ...extra }
}

const DONE = {
  model: 'm',
  message: { role: 'assistant', content: '' },
  done: true,
  done_reason: 'stop',
  prompt_eval_count: 3,
  eval_count: 4,
  eval_duration: 2e6,
  total_duration: 3e6,
}

/** An answer that thinks, says "Hi" with log probabilities, then calls two tools (one without an id). */
const ANSWER = [
  chatFrame({ thinking: 'Let me ' }),
  chatFrame({ thinking: 'see.' }),
  chatFrame(
    { content: 'Hi' },
    {
      logprobs: [
        {
          token: 'Hi',
          logprob: -0.5,
          bytes: [72, 105],
          top_logprobs: [
            { token: 'Hi', logprob: -0.5 },
            { token: 'Hello', logprob: -1.25 },
          ],
        },
      ],
    },
  ),
  chatFrame({
    tool_calls: [
      { id: 'call_ollama1', function: { index: 0, name: 'get_weather', arguments: { city: 'Paris' } } },
    ],
  }),
  chatFrame({ tool_calls: [{ function: { index: 1, name: 'get_weather', arguments: { city: 'Oslo' } } }] }),
  DONE,
]

test('ollama backend: tools, format, think, logprobs, penalties and tool turns reach Ollama as it expects', async (t) => {
  const server = await scripted(t)
  server.frames = [DONE]
  const backend = await backendFor(t, server.url)

  await backend.chat({
    model: 'm',
    messages: [
      { role: 'user', content: 'Weather in Paris?' },
      {
        role: 'assistant',
        content: '',
        thinking: 'I should look it up.',
        toolCalls: [{ id: 'call_1', name: 'get_weather', arguments: { city: 'Paris' } }],
      },
      { role: 'tool', content: '{"c":21}', toolName: 'get_weather', toolCallId: 'call_1' },
    ],
    tools: [WEATHER],
    format: { type: 'json', schema: SCHEMA },
    think: 'high',
    logprobs: 3,
    options: { presence_penalty: 0.5, frequency_penalty: 0.25, repeat_last_n: 32, temperature: 0 },
  })
  const chat = server.bodies.at(-1) as Json
  t.alike(chat.tools, [WEATHER], 'tools as they are (Ollama’s shape is OpenAI’s)')
  t.alike(chat.format, SCHEMA, 'format: the schema itself')
  t.is(chat.think, 'high')
  t.is(chat.logprobs, true)
  t.is(chat.top_logprobs, 3)
  t.alike(chat.options, { presence_penalty: 0.5, frequency_penalty: 0.25, repeat_last_n: 32, temperature: 0 })
  t.alike(chat.messages, [
    { role: 'user', content: 'Weather in Paris?' },
    {
      role: 'assistant',
      content: '',
      thinking: 'I should look it up.',
      tool_calls: [{ id: 'call_1', function: { name: 'get_weather', arguments: { city: 'Paris' } } }],
    },
    { role: 'tool', content: '{"c":21}', tool_name: 'get_weather', tool_call_id: 'call_1' },
  ])

  await backend.generate({ model: 'm', prompt: 'p', format: { type: 'json' }, think: false, logprobs: 0 })
  const gen = server.bodies.at(-1) as Json
  t.is(gen.format, 'json', 'format without a schema: "json"')
  t.is(gen.think, false, 'think: false is passed on (it turns reasoning off)')
  t.is(gen.logprobs, true)
  t.absent('top_logprobs' in gen, 'no alternatives asked for')

  await backend.chat({ model: 'm', messages: [{ role: 'user', content: 'x' }] })
  const plain = server.bodies.at(-1) as Json
  for (const k of ['tools', 'format', 'think', 'logprobs', 'top_logprobs'])
    t.absent(k in plain, `no ${k} unless asked`)

  await backend.chat({
    model: 'm',
    messages: [{ role: 'user', content: 'x' }],
    tools: [WEATHER],
    toolChoice: 'none',
  })
  t.absent('tools' in (server.bodies.at(-1) as Json), "toolChoice 'none': the model is shown no tools")

  const sent = server.bodies.length
  for (const toolChoice of ['required', { name: 'get_weather' }] as const) {
    const err = await rejectsWith(
      t,
      backend.chat({ model: 'm', messages: [{ role: 'user', content: 'x' }], tools: [WEATHER], toolChoice }),
      'ERR_UNSUPPORTED',
      `toolChoice ${JSON.stringify(toolChoice)}`,
    )
    t.is(err?.details?.param, 'tool_choice')
  }
  t.is(server.bodies.length, sent, 'a refused request never reaches Ollama')
})

test('ollama backend: a streamed answer’s thinking, logprobs and tool calls come as deltas, in order', async (t) => {
  const server = await scripted(t)
  server.frames = ANSWER
  const backend = await backendFor(t, server.url)

  const events: Array<['token', string] | ['delta', GenerationDelta]> = []
  const r = await backend.chat(
    { model: 'm', messages: [{ role: 'user', content: 'x' }], tools: [WEATHER], think: true, logprobs: 1 },
    { onToken: (text) => events.push(['token', text]), onDelta: (d) => events.push(['delta', d]) },
  )
  const made = r.toolCalls?.[1]?.id ?? ''
  t.ok(/^call_[0-9a-f]{24}$/.test(made), `an id made for the call without one: ${made}`)
  t.alike(events, [
    ['delta', { thinking: 'Let me ' }],
    ['delta', { thinking: 'see.' }],
    [
      'delta',
      {
        logprobs: [
          {
            token: 'Hi',
            logprob: -0.5,
            bytes: [72, 105],
            top: [
              { token: 'Hi', logprob: -0.5 },
              { token: 'Hello', logprob: -1.25 },
            ],
          },
        ],
      },
    ],
    ['token', 'Hi'],
    ['delta', { toolCalls: [{ id: 'call_ollama1', name: 'get_weather', arguments: { city: 'Paris' } }] }],
    ['delta', { toolCalls: [{ id: made, name: 'get_weather', arguments: { city: 'Oslo' } }] }],
  ])
  t.is(r.text, 'Hi')
  t.is(r.doneReason, 'stop')
  t.is(r.completionTokens, 4)
  t.alike(
    r.toolCalls?.map((c) => c.arguments.city),
    ['Paris', 'Oslo'],
    'the calls are in the result too',
  )
  t.absent(r.thinking, 'streamed: reasoning went in deltas only')
  t.absent(r.logprobs, 'streamed: log probabilities went in deltas only')
})

test('ollama backend: a whole answer carries thinking, logprobs and tool calls in its result', async (t) => {
  const server = await scripted(t)
  server.frames = ANSWER
  const backend = await backendFor(t, server.url)

  const r = await backend.chat({ model: 'm', messages: [{ role: 'user', content: 'x' }], tools: [WEATHER] })
  t.is(r.text, 'Hi')
  t.is(r.thinking, 'Let me see.')
  t.alike(
    r.logprobs?.map((l) => [l.token, l.top?.length]),
    [['Hi', 2]],
  )
  t.is(r.toolCalls?.length, 2)
  t.is(r.toolCalls?.[0]?.id, 'call_ollama1', 'Ollama’s own id is kept')
  t.not(r.toolCalls?.[1]?.id, r.toolCalls?.[0]?.id)

  const one = await backend.chat({
    model: 'm',
    messages: [{ role: 'user', content: 'x' }],
    tools: [WEATHER],
    parallelToolCalls: false,
  })
  t.alike(
    one.toolCalls?.map((c) => c.arguments.city),
    ['Paris'],
    'parallelToolCalls false: the first call only',
  )

  server.frames = [
    { model: 'm', response: '', thinking: 'hmm', done: false },
    { model: 'm', response: '{"n":1}', done: false, logprobs: [{ token: '{"n":1}', logprob: -0.1 }] },
    { ...DONE, message: undefined, response: '' },
  ]
  const gen = await backend.generate({ model: 'm', prompt: 'p', think: true, logprobs: 0 })
  t.is(gen.text, '{"n":1}')
  t.is(gen.thinking, 'hmm', 'generate: the top-level thinking')
  t.alike(gen.logprobs, [{ token: '{"n":1}', logprob: -0.1 }])
})

test('ollama backend: a tool call Ollama got wrong is an error, not a call', async (t) => {
  const server = await scripted(t)
  const backend = await backendFor(t, server.url)
  const user = [{ role: 'user' as const, content: 'x' }]
  server.frames = [chatFrame({ tool_calls: [{ function: { name: 'get_weather', arguments: 7 } }] }), DONE]
  await rejectsWith(
    t,
    backend.chat({ model: 'm', messages: user, tools: [WEATHER] }),
    'ERR_BACKEND_UNAVAILABLE',
    'arguments not an object',
  )
  server.frames = [chatFrame({ tool_calls: [{ function: { arguments: {} } }] }), DONE]
  await rejectsWith(
    t,
    backend.chat({ model: 'm', messages: user, tools: [WEATHER] }),
    'ERR_BACKEND_UNAVAILABLE',
    'no name',
  )
  server.frames = [
    chatFrame({ tool_calls: [{ function: { name: 'get_weather', arguments: '{"city":"Rome"}' } }] }),
    DONE,
  ]
  const r = await backend.chat({ model: 'm', messages: user, tools: [WEATHER] })
  t.alike(r.toolCalls?.[0]?.arguments, { city: 'Rome' }, 'arguments as a JSON string are read')
})
