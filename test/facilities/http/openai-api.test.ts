import type { Test } from 'brittle'
import test from 'brittle'
import OpenAI from 'openai'
import { MeshError } from '../../../kernel/errors.js'
import { MODEL, StandInSource, serveOpenAI, TOKENS } from './stand-in-source.js'

const TEXT = TOKENS.join('')
const user = [{ role: 'user' as const, content: 'hi' }]

async function setup(t: Test) {
  const source = new StandInSource()
  const url = await serveOpenAI(t, source)
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 })
  return { source, url, client }
}

function post(url: string, body: unknown): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  })
}

test('openai-api: chat whole and streamed, with include_usage', async (t) => {
  const { source, client } = await setup(t)

  const whole = await client.chat.completions.create({
    model: MODEL,
    messages: [{ role: 'developer', content: 'be brief' }, ...user],
    max_completion_tokens: 10,
    temperature: 0.5,
  })
  t.is(whole.id, 'chatcmpl-req1')
  t.is(whole.object, 'chat.completion')
  t.is(whole.model, MODEL)
  t.is(whole.choices[0]?.message.content, TEXT)
  t.is(whole.choices[0]?.message.role, 'assistant')
  t.is(whole.choices[0]?.finish_reason, 'stop')
  t.alike(whole.usage, { prompt_tokens: 4, completion_tokens: 3, total_tokens: 7 })
  t.alike(source.lastRequest, {
    model: MODEL,
    messages: [
      { role: 'system', content: 'be brief' },
      { role: 'user', content: 'hi' },
    ],
    options: { temperature: 0.5, num_predict: 10 },
  })

  const stream = await client.chat.completions.create({
    model: MODEL,
    messages: user,
    stream: true,
    stream_options: { include_usage: true },
  })
  const chunks = []
  for await (const c of stream) chunks.push(c)
  t.is(chunks[0]?.choices[0]?.delta.role, 'assistant', 'the first chunk names the role')
  t.is(chunks.map((c) => c.choices[0]?.delta.content ?? '').join(''), TEXT, 'chunks add up to the text')
  t.is(chunks.at(-2)?.choices[0]?.finish_reason, 'stop')
  t.alike(chunks.at(-1)?.choices, [], 'the usage chunk has no choices')
  t.is(chunks.at(-1)?.usage?.total_tokens, 7)
  t.ok(chunks.every((c) => c.id === 'chatcmpl-req1' && c.object === 'chat.completion.chunk'))
})

test('openai-api: SSE framing on the wire ends with [DONE]', async (t) => {
  const { url } = await setup(t)
  const res = await post(`${url}/v1/chat/completions`, { model: MODEL, messages: user, stream: true })
  t.is(res.status, 200)
  t.is(res.headers.get('content-type'), 'text/event-stream; charset=utf-8')
  t.is(res.headers.get('x-accel-buffering'), 'no')
  const text = await res.text()
  const events = text.split('\n\n').filter((e) => e !== '')
  t.ok(
    events.every((e) => e.startsWith('data: ')),
    'every event is one data: line',
  )
  t.is(events.at(-1), 'data: [DONE]')
  t.is(events.length, TOKENS.length + 2, 'one event per token, the finish reason, [DONE]')
})

test('openai-api: legacy completions, embeddings and models', async (t) => {
  const { source, client } = await setup(t)

  const c = await client.completions.create({ model: MODEL, prompt: 'abc' })
  t.is(c.id, 'cmpl-req1')
  t.is(c.object, 'text_completion')
  t.is(c.choices[0]?.text, TEXT)
  t.alike(
    source.lastRequest,
    { model: MODEL, prompt: 'abc', raw: true, options: { num_predict: 16 } },
    '16 tokens by default',
  )
  const streamed = await client.completions.create({
    model: MODEL,
    prompt: 'abc',
    stream: true,
    max_tokens: 3,
  })
  const texts = []
  for await (const chunk of streamed) texts.push(chunk.choices[0]?.text ?? '')
  t.is(texts.join(''), TEXT)

  const e = await client.embeddings.create({ model: MODEL, input: ['ab', 'abcd'], encoding_format: 'float' })
  t.is(e.object, 'list')
  t.alike(
    e.data.map((d) => d.embedding),
    [
      [2, 0.5, -1],
      [4, 0.5, -1],
    ],
  )
  t.alike(e.usage, { prompt_tokens: 2, total_tokens: 2 })
  const b64 = await client.embeddings.create({ model: MODEL, input: 'ab' })
  t.alike(b64.data[0]?.embedding, [2, 0.5, -1], 'the client decodes the default base64 encoding')

  const models = await client.models.list()
  t.alike(
    models.data.map((m) => ({ ...m })),
    [
      {
        id: MODEL,
        object: 'model',
        created: Date.parse('2026-01-02T03:04:05.000Z') / 1000,
        owned_by: 'llm-mesh',
      },
    ],
  )
  const one = await client.models.retrieve(MODEL)
  t.is(one.id, MODEL)
})

test('openai-api: errors are OpenAI error objects with their statuses', async (t) => {
  const { source, url, client } = await setup(t)

  const unknown = await client.chat.completions
    .create({ model: 'nope', messages: user })
    .catch((e: unknown) => e)
  t.ok(unknown instanceof OpenAI.NotFoundError, 'unknown model: 404')
  t.is((unknown as InstanceType<typeof OpenAI.APIError>).code, 'model_not_found')

  const bad = await post(`${url}/v1/chat/completions`, {
    model: MODEL,
    messages: user,
    tools: [{ type: 'web_search' }],
  })
  t.is(bad.status, 400)
  t.alike(await bad.json(), {
    error: {
      message: "tools[0].type 'web_search' is not supported by this server: only function tools",
      type: 'invalid_request_error',
      param: 'tools[0].type',
      code: 'err_unsupported',
    },
  })
  const invalid = await post(`${url}/v1/chat/completions`, { model: MODEL, messages: [] })
  t.is(invalid.status, 400)
  t.is(((await invalid.json()) as { error: { param: string } }).error.param, 'messages')

  const wrong = await fetch(`${url}/v1/chat/completions`)
  t.is(wrong.status, 405)
  t.is(wrong.headers.get('allow'), 'POST')
  t.is(((await wrong.json()) as { error: { code: string } }).error.code, 'method_not_allowed')
  const missing = await fetch(`${url}/v1/nothing`)
  t.is(missing.status, 404)
  await missing.body?.cancel()

  source.failBefore = new MeshError('ERR_RATE_LIMITED', 'slow down', { retryAfterMs: 1500 })
  const limited = await post(`${url}/v1/chat/completions`, { model: MODEL, messages: user, stream: true })
  t.is(limited.status, 429, 'an error before the first token keeps its status, even when streaming')
  t.is(limited.headers.get('retry-after'), '2')
  t.alike(((await limited.json()) as { error: unknown }).error, {
    message: 'slow down',
    type: 'rate_limit_error',
    param: null,
    code: 'rate_limit_exceeded',
  })

  source.failBefore = null
  source.failAfter = new MeshError('ERR_STREAM_BROKEN', 'processor went away')
  const broken = await post(`${url}/v1/chat/completions`, { model: MODEL, messages: user, stream: true })
  t.is(broken.status, 200)
  const events = (await broken.text()).split('\n\n').filter((e) => e !== '')
  t.is(events.length, TOKENS.length + 1, 'the tokens, then the error, no [DONE]')
  const last = JSON.parse((events.at(-1) as string).slice('data: '.length)) as { error: { message: string } }
  t.is(last.error.message, 'processor went away')
})

test('openai-api: a client that aborts cancels the generation', async (t) => {
  const { source, client } = await setup(t)
  source.hang = true
  const controller = new AbortController()
  const stream = await client.chat.completions.create(
    { model: MODEL, messages: user, stream: true },
    { signal: controller.signal },
  )
  const it = stream[Symbol.asyncIterator]()
  const first = await it.next()
  t.is(first.value?.choices[0]?.delta.content, TOKENS[0], 'the first token arrived')
  controller.abort()
  await it.next().catch(() => {})
  t.is(await source.outcome, 'cancelled', 'the source saw the cancel')
})
