import test from 'brittle'
import { zodFunction, zodResponseFormat } from 'openai/helpers/zod'
import { z } from 'zod'
import { MeshError } from '../../../kernel/errors.js'
import type { TokenLogprob } from '../../../kernel/wire.js'
import { MODEL, post, refusal, serveScripted, sseEvents } from './scripted-choices.js'

const user = [{ role: 'user' as const, content: 'hi' }]
const wireUser = [{ role: 'user', content: 'hi' }]

test('openai-answer-shape: response_format and parse reach the source as format, with the schema', async (t) => {
  const { source, client } = await serveScripted(t)
  const Weather = z.object({ city: z.string(), temp: z.number() })
  const format = zodResponseFormat(Weather, 'weather')
  source.script = [{ pieces: ['{"city":', '"Paris","temp":21}'] }]
  const parsed = await client.chat.completions.parse({
    model: MODEL,
    messages: user,
    response_format: format,
  })
  t.alike(parsed.choices[0]?.message.parsed, { city: 'Paris', temp: 21 }, 'the client parses the answer')
  t.alike(source.last, {
    model: MODEL,
    messages: wireUser,
    format: { type: 'json', schema: format.json_schema.schema },
  })

  await client.chat.completions.create({
    model: MODEL,
    messages: user,
    response_format: { type: 'json_object' },
  })
  t.alike(
    source.last,
    { model: MODEL, messages: wireUser, format: { type: 'json' } },
    'json_object: any JSON',
  )
  await client.chat.completions.create({ model: MODEL, messages: user, response_format: { type: 'text' } })
  t.alike(source.last, { model: MODEL, messages: wireUser }, 'text asks for nothing')

  source.script = [{ toolCalls: [{ id: 'call_1', name: 'get_weather', arguments: { city: 'Oslo' } }] }]
  const called = await client.chat.completions.parse({
    model: MODEL,
    messages: user,
    tools: [zodFunction({ name: 'get_weather', parameters: z.object({ city: z.string() }) })],
  })
  t.alike(
    called.choices[0]?.message.tool_calls?.[0]?.function.parsed_arguments,
    { city: 'Oslo' },
    'a strict zod function tool: the client parses the arguments',
  )
})

test('openai-answer-shape: reasoning_effort is think; reasoning comes back as reasoning_content', async (t) => {
  const { source, client, url } = await serveScripted(t)
  const efforts = ['none', 'minimal', 'low', 'medium', 'high'] as const
  const thinks = []
  for (const reasoning_effort of efforts) {
    await client.chat.completions.create({ model: MODEL, messages: user, reasoning_effort })
    thinks.push(source.last?.think)
  }
  t.alike(thinks, [false, 'low', 'low', 'medium', 'high'])

  source.script = [{ thinking: 'six times seven', pieces: ['4', '2'] }]
  const whole = await client.chat.completions.create({
    model: MODEL,
    messages: user,
    reasoning_effort: 'high',
  })
  const message = whole.choices[0]?.message as unknown as Record<string, unknown>
  t.is(message.content, '42')
  t.is(message.reasoning_content, 'six times seven')

  const res = await post(url, '/v1/chat/completions', { model: MODEL, messages: user, stream: true })
  const deltas = (await sseEvents(res)).map((e) => (e.choices as { delta: unknown }[])[0]?.delta)
  t.alike(deltas, [
    { role: 'assistant', reasoning_content: 'six times seven' },
    { content: '4' },
    { content: '2' },
    {},
  ])

  source.script = [{ thinking: 'hmm' }]
  source.failAfter = new MeshError('ERR_STREAM_BROKEN', 'processor went away')
  const broken = await post(url, '/v1/chat/completions', { model: MODEL, messages: user, stream: true })
  t.is(broken.status, 200, 'the reasoning delta opened the stream')
  const events = (await broken.text()).split('\n\n').filter((e) => e !== '')
  t.is(events.length, 2, 'the reasoning, then the error')
  t.ok(events[0]?.includes('"reasoning_content":"hmm"'))
  t.ok(events[1]?.startsWith('data: {"error":'))
  source.failAfter = null

  const bad = await post(url, '/v1/chat/completions', {
    model: MODEL,
    messages: user,
    reasoning_effort: 'max',
  })
  t.alike(await refusal(bad), { status: 400, code: 'err_bad_request', param: 'reasoning_effort' })
})

const LOGPROBS: TokenLogprob[] = [
  {
    token: '4',
    logprob: -0.1,
    top: [
      { token: '4', logprob: -0.1 },
      { token: '5', logprob: -2.5, bytes: [53] },
    ],
  },
  { token: 'é', logprob: -0.2, top: [{ token: 'é', logprob: -0.2 }] },
]
const RENDERED = [
  {
    token: '4',
    logprob: -0.1,
    bytes: [52],
    top_logprobs: [
      { token: '4', logprob: -0.1, bytes: [52] },
      { token: '5', logprob: -2.5, bytes: [53] },
    ],
  },
  {
    token: 'é',
    logprob: -0.2,
    bytes: [195, 169],
    top_logprobs: [{ token: 'é', logprob: -0.2, bytes: [195, 169] }],
  },
]

test('openai-answer-shape: logprobs and top_logprobs, whole and streamed', async (t) => {
  const { source, client, url } = await serveScripted(t)
  source.script = [{ pieces: ['4', 'é'], logprobs: LOGPROBS }]
  const whole = await client.chat.completions.create({
    model: MODEL,
    messages: user,
    logprobs: true,
    top_logprobs: 2,
  })
  t.is(source.last?.logprobs, 2)
  t.alike(whole.choices[0]?.logprobs, { content: RENDERED, refusal: null })

  const stream = client.chat.completions.stream({ model: MODEL, messages: user, logprobs: true })
  const final = await stream.finalChatCompletion()
  t.is(source.last?.logprobs, 0, 'logprobs without top_logprobs: no alternatives')
  t.alike(final.choices[0]?.logprobs?.content, RENDERED, 'streamed in a chunk of their own')
  t.is(final.choices[0]?.message.content, '4é')

  const without = await post(url, '/v1/chat/completions', { model: MODEL, messages: user, top_logprobs: 2 })
  t.alike(await refusal(without), { status: 400, code: 'err_bad_request', param: 'top_logprobs' })
  const many = await post(url, '/v1/chat/completions', {
    model: MODEL,
    messages: user,
    logprobs: true,
    top_logprobs: 21,
  })
  t.alike(await refusal(many), { status: 400, code: 'err_bad_request', param: 'top_logprobs' })
})

test('openai-answer-shape: sampling parameters and extensions become options; harmless fields are ignored', async (t) => {
  const { source, client } = await serveScripted(t)
  await client.chat.completions.create({
    model: MODEL,
    messages: user,
    temperature: 0.3,
    top_p: 0.9,
    seed: 7,
    stop: 'END',
    max_tokens: 20,
    presence_penalty: 0.5,
    frequency_penalty: -0.5,
    logit_bias: {},
    user: 'me',
    store: false,
    metadata: { k: 'v' },
    service_tier: 'auto',
    // vLLM's and llama.cpp's extensions.
    ...({ top_k: 40, min_p: 0.05, repetition_penalty: 1.1 } as object),
  })
  t.alike(source.last, {
    model: MODEL,
    messages: wireUser,
    options: {
      temperature: 0.3,
      top_p: 0.9,
      top_k: 40,
      min_p: 0.05,
      seed: 7,
      stop: ['END'],
      repeat_penalty: 1.1,
      presence_penalty: 0.5,
      frequency_penalty: -0.5,
      num_predict: 20,
    },
  })
  await client.chat.completions.create({
    model: MODEL,
    messages: user,
    max_tokens: 20,
    max_completion_tokens: 5,
    stop: ['a', 'b'],
    ...({ repeat_penalty: 1.2 } as object),
  })
  t.alike(source.last?.options, { stop: ['a', 'b'], repeat_penalty: 1.2, num_predict: 5 })
})

test('openai-answer-shape: what cannot be honoured is a 400 naming it', async (t) => {
  const { source, url } = await serveScripted(t)
  const cases: [Record<string, unknown>, string, string][] = [
    [{ logit_bias: { 50256: -100 } }, 'err_unsupported', 'logit_bias'],
    [{ audio: { voice: 'alloy', format: 'mp3' } }, 'err_unsupported', 'audio'],
    [{ modalities: ['text', 'audio'] }, 'err_unsupported', 'modalities'],
    [{ prediction: { type: 'content', content: 'x' } }, 'err_unsupported', 'prediction'],
    [{ web_search_options: {} }, 'err_unsupported', 'web_search_options'],
    [{ verbosity: 'low' }, 'err_unsupported', 'verbosity'],
    [
      { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] },
      'err_unsupported',
      'messages[0].content[0].type',
    ],
    [{ response_format: { type: 'grammar' } }, 'err_bad_request', 'response_format.type'],
    [{ response_format: { type: 'json_schema' } }, 'err_bad_request', 'response_format.json_schema'],
    [{ repeat_penalty: 1.1, repetition_penalty: 1.1 }, 'err_bad_request', 'repetition_penalty'],
    [{ presence_penalty: 2.5 }, 'err_bad_request', 'presence_penalty'],
  ]
  for (const [fields, code, param] of cases) {
    const res = await post(url, '/v1/chat/completions', { model: MODEL, messages: user, ...fields })
    t.alike(await refusal(res), { status: 400, code, param }, param)
  }
  const ok = await post(url, '/v1/chat/completions', { model: MODEL, messages: user, modalities: ['text'] })
  t.is(ok.status, 200, 'modalities of text alone asks for nothing')
  await ok.body?.cancel()
  t.is(source.requests.length, 1, 'only that one reached the source')
})

test("openai-answer-shape: a backend's refusal of think, format or replayed calls names the field as an OpenAI caller does", async (t) => {
  const { source, url } = await serveScripted(t)
  const why = 'is not supported by the ollama backend'
  const cases: [string, string, string][] = [
    ['think', 'reasoning_effort', 'reasoning_effort is not supported by the ollama backend'],
    ['format', 'response_format', 'response_format is not supported by the ollama backend'],
    ['messages.tool_calls', 'messages', 'messages is not supported by the ollama backend'],
    ['tool_choice', 'tool_choice', 'tool_choice is not supported by the ollama backend'],
  ]
  for (const [wire, param, message] of cases) {
    source.failBefore = MeshError.unsupported(wire, why)
    for (const stream of [false, true]) {
      const res = await post(url, '/v1/chat/completions', { model: MODEL, messages: user, stream })
      const body = (await res.json()) as { error: { code: string; param: string; message: string } }
      t.alike(
        [res.status, body.error.code, body.error.param, body.error.message],
        [400, 'err_unsupported', param, message],
        `${wire} refused, ${stream ? 'streamed' : 'whole'}: named ${param}`,
      )
    }
  }
})
