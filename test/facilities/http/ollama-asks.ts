/**
 * What a test asks of an Ollama-protocol server over the scripted source with the official
 * `ollama` client, unmodified: tools, reasoning, an output format and log probabilities,
 * whole and streamed, checked against the script (ollama-scripted-source.ts).
 */
import type { Test } from 'brittle'
import type { ChatResponse, Ollama, Tool } from 'ollama'
import { MODEL } from './ollama-scripted-source.js'

export const WEATHER: Tool = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
}
export const USER = [{ role: 'user', content: 'Weather in Paris?' }]
export const SCHEMA = { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] }

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

/** Chat with tools and think (whole), with logprobs too (streamed), generate with a schema format. */
export async function askEverything(t: Test, ollama: Ollama) {
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
