/**
 * The official `ollama` client, unmodified, asking for tools, reasoning, output formats and log
 * probabilities: against the Ollama-protocol server over a scripted source, and through the
 * chain client → server → ollama backend → server → source, where the inner server must see
 * the fields as the client sent them.
 */
import type { Test } from 'brittle'
import test from 'brittle'
import { type ChatResponse, Ollama, type Tool } from 'ollama'
import { OllamaBackend } from '../../../facilities/backends/ollama/ollama.backend.js'
import { OllamaCompatServer } from '../../../facilities/http/ollama-api.js'
import type { ChatRequest, GenerateRequest } from '../../../kernel/wire.js'
import { MODEL, serveScripted } from './ollama-scripted-source.js'

type Json = Record<string, unknown>

const WEATHER: Tool = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
}
const USER = [{ role: 'user', content: 'Weather in Paris?' }]
const SCHEMA = { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] }

/** The calls of a chat answer as [id, name, arguments]; `id` is not in the client's types (Ollama 0.12 sends it). */
function callsOf(message: ChatResponse['message']): unknown[] {
  return (message.tool_calls ?? []).map((c) => [
    (c as { id?: string }).id,
    c.function.name,
    c.function.arguments,
  ])
}

const EXPECTED_CALLS = [
  ['call_a', 'get_weather', { city: 'Paris' }],
  ['call_b', 'get_time', { zone: 'CET' }],
]

/** What a streamed chat adds up to. */
async function collect(stream: AsyncIterable<ChatResponse>) {
  let content = ''
  let thinking = ''
  const calls: unknown[] = []
  const logprobs: string[] = []
  let last: ChatResponse | null = null
  for await (const part of stream) {
    content += part.message.content
    thinking += part.message.thinking ?? ''
    calls.push(...callsOf(part.message))
    logprobs.push(...(part.logprobs ?? []).map((l) => l.token))
    last = part
  }
  return { content, thinking, calls, logprobs, last }
}

async function askEverything(t: Test, ollama: Ollama) {
  const whole = await ollama.chat({ model: MODEL, messages: USER, tools: [WEATHER], think: true })
  t.is(whole.message.content, 'Let me check.')
  t.is(whole.message.thinking, 'Paris is in France.', 'message.thinking')
  t.alike(callsOf(whole.message), EXPECTED_CALLS, 'message.tool_calls')

  const streamed = await collect(
    await ollama.chat({
      model: MODEL,
      messages: USER,
      tools: [WEATHER],
      think: 'medium',
      logprobs: true,
      top_logprobs: 2,
      stream: true,
    }),
  )
  t.is(streamed.content, 'Let me check.')
  t.is(streamed.thinking, 'Paris is in France.', 'streamed: the thinking adds up')
  t.alike(streamed.calls, EXPECTED_CALLS, 'streamed: each call once')
  t.alike(streamed.logprobs, ['Let me ', 'check.'], 'streamed: a log probability per token')
  t.is(streamed.last?.done, true)

  const gen = await ollama.generate({ model: MODEL, prompt: 'p', format: SCHEMA, logprobs: true })
  t.is(gen.response, 'Let me check.')
  t.alike(
    gen.logprobs?.map((l) => [l.token, l.logprob]),
    [
      ['Let me ', -0.25],
      ['check.', -0.5],
    ],
  )
}

test('ollama client: tools, think, format and logprobs against the Ollama-protocol server', async (t) => {
  const { url, source, bodies } = await serveScripted(t)
  await askEverything(t, new Ollama({ host: url }))
  const [chat, streamed, gen] = source.requests as [ChatRequest, ChatRequest, GenerateRequest]
  t.alike(chat.tools, [WEATHER], 'the source saw the tools')
  t.is(chat.think, true)
  t.is(streamed.think, 'medium')
  t.is(streamed.logprobs, 2)
  t.alike(gen.format, { type: 'json', schema: SCHEMA })
  t.alike(
    bodies.map(([path]) => path),
    ['/api/chat', '/api/chat', '/api/generate'],
    'onRequest saw each body',
  )
})

test('ollama client → server → ollama backend → server: the fields arrive intact, the answer comes back', async (t) => {
  const inner = await serveScripted(t)
  const backend = new OllamaBackend({ host: inner.url })
  t.teardown(() => backend.close(), { order: 1 })
  await backend.open()
  const outer = new OllamaCompatServer({ source: backend })
  t.teardown(() => outer.close(), { order: 0 })
  await outer.listen()

  await askEverything(t, new Ollama({ host: outer.url }))
  const [chat, streamed, gen] = inner.bodies.map(([, body]) => body) as [Json, Json, Json]
  t.alike(chat.tools, [WEATHER], 'tools as the client sent them')
  t.is(chat.think, true)
  t.is(streamed.think, 'medium')
  t.is(streamed.logprobs, true)
  t.is(streamed.top_logprobs, 2)
  t.alike(gen.format, SCHEMA, 'the schema as the client sent it')
  t.is(gen.logprobs, true)
  t.absent('top_logprobs' in gen)

  const replay = await new Ollama({ host: outer.url }).chat({
    model: MODEL,
    messages: [
      ...USER,
      {
        role: 'assistant',
        content: '',
        thinking: 'Look it up.',
        tool_calls: [{ function: { name: 'get_weather', arguments: { city: 'Paris' } } }],
      },
      { role: 'tool', content: '21', tool_name: 'get_weather' },
    ],
  })
  t.is(replay.message.content, 'Let me check.')
  const [, sent] = inner.bodies.at(-1) as [string, Json]
  const [, assistant, tool] = sent.messages as Json[]
  t.is(assistant?.thinking, 'Look it up.')
  const call = ((assistant?.tool_calls ?? []) as Json[])[0] ?? {}
  t.alike(call.function, { name: 'get_weather', arguments: { city: 'Paris' } })
  t.ok(/^call_/.test(String(call.id)), `the replayed call carries the id made for it: ${String(call.id)}`)
  t.alike(tool, { role: 'tool', content: '21', tool_name: 'get_weather' })
})
