/**
 * The official `ollama` client, unmodified, asking for tools, reasoning, output formats and log
 * probabilities: against the Ollama-protocol server over a scripted source, and through the
 * chain client → server → ollama backend → server → source, where the inner server must see
 * the fields as the client sent them.
 */
import test from 'brittle'
import { Ollama } from 'ollama'
import { OllamaBackend } from '../../../facilities/backends/ollama/ollama.backend.js'
import { OllamaCompatServer } from '../../../facilities/http/ollama-api.js'
import type { ChatRequest, GenerateRequest } from '../../../kernel/wire.js'
import { askEverything, SCHEMA, USER, WEATHER } from './ollama-asks.js'
import { MODEL, serveScripted } from './ollama-scripted-source.js'

type Json = Record<string, unknown>

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
