import { request } from 'node:http'
import { join } from 'node:path'
import test, { type Test } from 'brittle'
import { Ollama } from 'ollama'
import OpenAI from 'openai'
import { TINY_MODEL_NAME, writeTinyModel } from '../../../facilities/tiny-model/tiny-model.js'
import type { UsageFacility } from '../../../facilities/usage/usage.facility.js'
import { apiKeyFor, spawnProcessor, startGateway, testnet, until } from '../../helpers/mesh.js'

const STEP1_TEXT = 'defghijklmnopqrstuvwxyz'
const LOOP_MODEL = 'looper'
const N_EMBD = 128

/** A gateway with its HTTP APIs on a free loopback port, one llama.cpp processor, an admin key. */
async function httpMesh(t: Test, extra: Record<string, unknown> = {}, parallel = 2) {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, {
    http: { enabled: true, port: 0, ...((extra.http as object) ?? {}) },
    ...Object.fromEntries(Object.entries(extra).filter(([k]) => k !== 'http')),
  })
  const models = await t.tmp()
  await writeTinyModel(join(models, `${TINY_MODEL_NAME}.gguf`))
  await writeTinyModel(join(models, `${LOOP_MODEL}.gguf`), { loop: true })
  await spawnProcessor(t, bootstrap, [
    '--store',
    await t.tmp(),
    '--models',
    models,
    '--backend',
    'llamacpp',
    '--parallel',
    String(parallel),
  ])
  t.ok(await until(() => gateway.router.size === 1), 'the gateway sees the processor')
  const url = gateway.httpUrl as string
  const key = await apiKeyFor(gateway)
  return { gateway, url, key }
}

async function post(url: string, body: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, {
    method: 'POST',
    body,
    headers: { 'Content-Type': 'application/json', ...headers },
  })
  return { res, json: (await res.json().catch(() => null)) as Record<string, unknown> | null }
}

test('http: the official ollama client, unmodified, against the mesh', { timeout: 120_000 }, async (t) => {
  const { url, key } = await httpMesh(t)
  const ollama = new Ollama({ host: url, headers: { Authorization: `Bearer ${key}` } })

  const list = await ollama.list()
  t.ok(
    list.models.some((m) => m.name === TINY_MODEL_NAME),
    'list: the mesh models',
  )
  const show = await ollama.show({ model: TINY_MODEL_NAME })
  t.is(show.details.family, 'llama', 'show')

  const chat = await ollama.chat({
    model: TINY_MODEL_NAME,
    messages: [{ role: 'user', content: 'abc' }],
    options: { temperature: 0 },
  })
  t.is(chat.message.content, STEP1_TEXT, 'chat, not streamed: the exact text')
  t.is(chat.eval_count, 23)
  t.is(chat.prompt_eval_count, 4)
  t.is(chat.done_reason, 'stop')
  for (const f of ['total_duration', 'load_duration', 'prompt_eval_duration', 'eval_duration'] as const) {
    t.ok(typeof chat[f] === 'number', `${f} present`)
  }

  const parts: string[] = []
  let last: { done: boolean; eval_count?: number } | null = null
  for await (const part of await ollama.chat({
    model: TINY_MODEL_NAME,
    messages: [{ role: 'user', content: 'abc' }],
    options: { temperature: 0 },
    stream: true,
  })) {
    if (part.done) last = part
    else parts.push(part.message.content)
  }
  t.is(parts.join(''), STEP1_TEXT, 'chat, streamed: the exact text')
  t.ok(parts.length > 1, `in ${parts.length} chunks`)
  t.is(last?.eval_count, 23, 'the final frame has the counts')

  const gen = await ollama.generate({ model: TINY_MODEL_NAME, prompt: 'abc', options: { temperature: 0 } })
  t.is(gen.response, STEP1_TEXT, 'generate, not streamed')
  let streamed = ''
  for await (const part of await ollama.generate({ model: TINY_MODEL_NAME, prompt: 'abc', stream: true })) {
    streamed += part.response
  }
  t.is(streamed, STEP1_TEXT, 'generate, streamed')

  const emb = await ollama.embed({ model: TINY_MODEL_NAME, input: ['abc', 'xyz'] })
  t.is(emb.embeddings.length, 2)
  t.is(emb.embeddings[0]?.length, N_EMBD, 'embed: one vector per input')
  const legacy = await ollama.embeddings({ model: TINY_MODEL_NAME, prompt: 'abc' })
  t.is(legacy.embedding.length, N_EMBD, 'legacy embeddings')

  const ps = await ollama.ps()
  t.ok(
    ps.models.some((m) => m.name === TINY_MODEL_NAME),
    'ps: the loaded models of the mesh',
  )

  // abort(): the generation stops and the processor is free again.
  const long = await ollama.generate({
    model: LOOP_MODEL,
    prompt: 'a',
    stream: true,
    options: { num_predict: 100_000 },
  })
  let got = 0
  try {
    for await (const _ of long) {
      got++
      if (got === 2) long.abort()
    }
    t.fail('the aborted stream should end with an AbortError')
  } catch (err) {
    t.is((err as Error).name, 'AbortError', 'abort ends the stream')
  }
  const again = await ollama.generate({ model: TINY_MODEL_NAME, prompt: 'abc', options: { temperature: 0 } })
  t.is(again.response, STEP1_TEXT, 'the mesh serves on after an abort')
})

test('http: the official openai client, unmodified, against the mesh', { timeout: 120_000 }, async (t) => {
  const { url, key } = await httpMesh(t)
  const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: key })

  const completion = await openai.chat.completions.create({
    model: TINY_MODEL_NAME,
    messages: [{ role: 'user', content: 'abc' }],
    temperature: 0,
  })
  t.is(completion.choices[0]?.message.content, STEP1_TEXT, 'chat completion: the exact text')
  t.is(completion.choices[0]?.finish_reason, 'stop')
  t.alike(completion.usage, { prompt_tokens: 4, completion_tokens: 23, total_tokens: 27 }, 'usage')
  t.is(completion.object, 'chat.completion')

  const stream = await openai.chat.completions.create({
    model: TINY_MODEL_NAME,
    messages: [{ role: 'user', content: 'abc' }],
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  })
  let text = ''
  let deltas = 0
  let finish: string | null = null
  let usage: unknown = null
  for await (const chunk of stream) {
    const choice = chunk.choices[0]
    if (choice?.delta.content) {
      text += choice.delta.content
      deltas++
    }
    if (choice?.finish_reason) finish = choice.finish_reason
    if (chunk.usage) usage = chunk.usage
  }
  t.is(text, STEP1_TEXT, 'streamed: the exact text')
  t.ok(deltas > 1, `in ${deltas} deltas`)
  t.is(finish, 'stop')
  t.alike(
    usage,
    { prompt_tokens: 4, completion_tokens: 23, total_tokens: 27 },
    'include_usage: a usage chunk',
  )

  const limited = await openai.chat.completions.create({
    model: TINY_MODEL_NAME,
    messages: [{ role: 'user', content: 'abc' }],
    max_tokens: 5,
  })
  t.is(limited.choices[0]?.message.content, 'defgh')
  t.is(limited.choices[0]?.finish_reason, 'length', 'max_tokens: finish_reason length')

  const legacy = await openai.completions.create({
    model: TINY_MODEL_NAME,
    prompt: 'abc',
    max_tokens: 50,
    temperature: 0,
  })
  t.is(legacy.choices[0]?.text, STEP1_TEXT, 'completions: raw continuation')

  const models = await openai.models.list()
  t.ok(
    models.data.some((m) => m.id === TINY_MODEL_NAME),
    'models.list',
  )
  t.is((await openai.models.retrieve(TINY_MODEL_NAME)).id, TINY_MODEL_NAME, 'models.retrieve')

  const emb = await openai.embeddings.create({ model: TINY_MODEL_NAME, input: ['abc', 'hello'] })
  t.is(emb.data.length, 2)
  t.is(emb.data[0]?.embedding.length, N_EMBD, 'embeddings (base64 by default, decoded by the client)')
  const floats = await openai.embeddings.create({
    model: TINY_MODEL_NAME,
    input: 'abc',
    encoding_format: 'float',
  })
  const a = floats.data[0]?.embedding ?? []
  const b = emb.data[0]?.embedding ?? []
  t.ok(
    a.every((x, i) => Math.abs(x - (b[i] ?? 0)) < 1e-6),
    'float and base64 encodings agree',
  )

  try {
    await openai.chat.completions.create({
      model: 'no-such-model',
      messages: [{ role: 'user', content: 'x' }],
    })
    t.fail('unknown model should fail')
  } catch (err) {
    const e = err as { status?: number; code?: string; type?: string }
    t.is(e.status, 404, 'unknown model: 404')
    t.is(e.code, 'model_not_found')
  }
  const noKey = new OpenAI({
    baseURL: `${url}/v1`,
    apiKey: 'lmk_0000000000000000_notakeynotakeynotakeynotakey00',
  })
  try {
    await noKey.models.list()
    t.fail('a bad key should fail')
  } catch (err) {
    t.is((err as { status?: number }).status, 401, 'bad key: 401')
  }
})

test('http: errors have the statuses clients expect', { timeout: 120_000 }, async (t) => {
  const { url, key, gateway } = await httpMesh(
    t,
    { http: { maxBodyBytes: 2000 }, routing: { maxQueue: 0 } },
    1,
  )
  const auth = { Authorization: `Bearer ${key}` }
  const chatBody = JSON.stringify({
    model: TINY_MODEL_NAME,
    messages: [{ role: 'user', content: 'abc' }],
    stream: false,
  })

  const open = await fetch(`${url}/api/version`)
  t.is(open.status, 200, 'version needs no key (clients probe it)')
  t.ok(open.headers.get('x-request-id'), 'X-Request-Id on every response')

  const missing = await post(`${url}/api/chat`, chatBody)
  t.is(missing.res.status, 401, 'no key: 401')
  t.is(missing.res.headers.get('www-authenticate'), 'Bearer', 'WWW-Authenticate on a 401')
  t.ok(missing.res.headers.get('x-request-id'), 'X-Request-Id beside headers set before the head')
  t.ok(typeof missing.json?.error === 'string', 'Ollama error body')
  const missingV1 = await post(`${url}/v1/chat/completions`, chatBody)
  t.is(missingV1.res.status, 401)
  t.is((missingV1.json?.error as { type?: string })?.type, 'authentication_error', 'OpenAI error object')
  const bad = await post(`${url}/api/chat`, chatBody, { Authorization: 'Bearer nonsense' })
  t.is(bad.res.status, 401, 'invalid key: 401')

  const ok = await post(`${url}/api/chat`, chatBody, auth)
  t.is(ok.res.status, 200)
  t.is((ok.json?.message as { content?: string })?.content, STEP1_TEXT)
  const requestId = ok.res.headers.get('x-request-id')
  t.ok(requestId && requestId !== missing.res.headers.get('x-request-id'), 'a request id of its own')
  const overhead = Number(ok.res.headers.get('x-llm-mesh-overhead-ms'))
  t.ok(Number.isFinite(overhead) && overhead >= 0, `X-LLM-Mesh-Overhead-Ms: ${overhead}`)
  // The ledger write after the answer is the gateway's time too: a slow one shows in the header.
  const usage = gateway.usage as UsageFacility
  const record = usage.record.bind(usage)
  usage.record = async (r) => {
    // 160: a timer may fire up to ~1 ms early by performance.now().
    await new Promise((resolve) => setTimeout(resolve, 160))
    return record(r)
  }
  const slow = await post(`${url}/api/chat`, chatBody, auth)
  usage.record = record
  const slowOverhead = Number(slow.res.headers.get('x-llm-mesh-overhead-ms'))
  t.ok(slowOverhead >= 150, `a 150 ms ledger write counts in X-LLM-Mesh-Overhead-Ms: ${slowOverhead}`)
  // node:http answers an unknown Expect itself (417), before the gateway sees the request.
  const expect = await new Promise<{ status?: number; id: unknown }>((resolve, reject) => {
    const r = request(`${url}/api/chat`, { method: 'POST', headers: { Expect: 'nonsense' } }, (res) => {
      res.resume()
      resolve({ status: res.statusCode, id: res.headers['x-request-id'] })
    })
    r.on('error', reject)
    r.end()
  })
  t.is(expect.status, 417)
  t.is(expect.id, undefined, 'no empty X-Request-Id on an answer node:http gives itself')
  const v1 = await post(`${url}/v1/chat/completions`, chatBody, auth)
  t.is(
    v1.json?.id,
    `chatcmpl-${v1.res.headers.get('x-request-id')}`,
    "an OpenAI answer's id is its request id",
  )
  const streamed = await post(`${url}/api/chat`, chatBody.replace('"stream":false', '"stream":true'), auth)
  t.is(streamed.res.headers.get('content-type'), 'application/x-ndjson', 'a stream')
  t.is(streamed.res.headers.get('x-accel-buffering'), 'no')
  t.ok(
    streamed.res.headers.get('x-request-id') && streamed.res.headers.get('x-llm-mesh-overhead-ms'),
    "the gateway's headers on a stream's head too",
  )

  const unknown = await post(`${url}/api/chat`, chatBody.replace(TINY_MODEL_NAME, 'nope'), auth)
  t.is(unknown.res.status, 404, 'unknown model: 404')
  const nowhere = await post(`${url}/api/nowhere`, chatBody, auth)
  t.is(nowhere.res.status, 404, 'unknown Ollama endpoint: 404')
  t.is(nowhere.json?.error, '404 page not found')
  const nowhereV1 = await post(`${url}/v1/nowhere`, chatBody, auth)
  t.is(nowhereV1.res.status, 404, 'unknown OpenAI endpoint: 404')
  t.is(
    (nowhereV1.json?.error as { type?: string })?.type,
    'invalid_request_error',
    'as an OpenAI error object',
  )
  const badId = await fetch(`${url}/v1/models/%E0%A4%A`, { headers: auth })
  t.is(badId.status, 400, 'a model id with bad percent-encoding: 400')
  const malformed = await post(`${url}/api/chat`, '{"model": ', auth)
  t.is(malformed.res.status, 400, 'malformed JSON: 400')
  const malformedV1 = await post(`${url}/v1/chat/completions`, '{"model": ', auth)
  t.is(malformedV1.res.status, 400)
  t.is((malformedV1.json?.error as { type?: string })?.type, 'invalid_request_error')
  const giant = await post(
    `${url}/api/chat`,
    JSON.stringify({ model: TINY_MODEL_NAME, messages: [{ role: 'user', content: 'x'.repeat(5000) }] }),
    auth,
  )
  t.is(giant.res.status, 413, 'a body over http.maxBodyBytes: 413, before it is read')
  t.is(giant.res.headers.get('connection'), 'close', 'and the connection closes: the rest is never read')
  const getChat = await fetch(`${url}/v1/chat/completions`, { headers: auth })
  t.is(getChat.status, 405, 'GET on a POST endpoint: 405')
  t.is(getChat.headers.get('allow'), 'POST')
  t.is(((await getChat.json()) as { error?: { code?: string } }).error?.code, 'method_not_allowed')
  const head = await fetch(`${url}/api/tags`, { method: 'HEAD', headers: auth })
  t.is(head.status, 200, 'HEAD answered as GET')
  t.is(await head.text(), '', 'without a body')

  // Busy: one slot, no queue.
  const stop = new AbortController()
  const long = fetch(`${url}/api/generate`, {
    method: 'POST',
    headers: auth,
    body: JSON.stringify({ model: LOOP_MODEL, prompt: 'a', stream: false, options: { num_predict: 1500 } }),
    signal: stop.signal,
  }).catch(() => null)
  await until(() => gateway.router.list()[0]?.inflight === 1, 5_000, 10)
  const busy = await post(`${url}/v1/chat/completions`, chatBody, auth)
  t.is(busy.res.status, 503, 'mesh busy: 503')
  t.ok(Number(busy.res.headers.get('retry-after')) >= 1, 'with Retry-After')
  const busyOllama = await post(`${url}/api/chat`, chatBody, auth)
  t.is(busyOllama.res.status, 503, 'on the Ollama API too')
  t.ok(Number(busyOllama.res.headers.get('retry-after')) >= 1, 'with Retry-After')
  stop.abort()
  await long
  t.ok(await until(() => gateway.router.list()[0]?.inflight === 0, 5_000), 'the slot is free again')

  // Rate limited: a user allowed one request a minute.
  const slowKey = await apiKeyFor(gateway, 'slowpoke', 'user', { rpm: 1 })
  const first = await post(`${url}/api/chat`, chatBody, { Authorization: `Bearer ${slowKey}` })
  t.is(first.res.status, 200)
  const second = await post(`${url}/api/chat`, chatBody, { Authorization: `Bearer ${slowKey}` })
  t.is(second.res.status, 429, 'rate limited: 429')
  const retry = Number(second.res.headers.get('retry-after'))
  t.ok(retry >= 1 && retry <= 60, `Retry-After ${retry} s`)
  const third = await post(`${url}/v1/chat/completions`, chatBody, { Authorization: `Bearer ${slowKey}` })
  t.is(third.res.status, 429)
  t.is((third.json?.error as { code?: string })?.code, 'rate_limit_exceeded')
})

test('http: a client that disconnects cancels its generation', { timeout: 120_000 }, async (t) => {
  const { url, key, gateway } = await httpMesh(t, {}, 1)
  const controller = new AbortController()
  const res = await fetch(`${url}/api/generate`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${key}` },
    body: JSON.stringify({ model: LOOP_MODEL, prompt: 'a', options: { num_predict: 100_000 } }),
    signal: controller.signal,
  })
  const reader = (res.body as ReadableStream<Uint8Array>).getReader()
  await reader.read()
  controller.abort()
  t.ok(await until(() => gateway.router.list()[0]?.inflight === 0, 5_000), 'the slot is freed')
  const started = Date.now()
  const next = await post(
    `${url}/api/generate`,
    JSON.stringify({ model: TINY_MODEL_NAME, prompt: 'abc', stream: false }),
    { Authorization: `Bearer ${key}` },
  )
  t.is(next.json?.response, STEP1_TEXT)
  t.ok(Date.now() - started < 2_000, 'and the next request starts at once')
  const usage = await gateway.usage?.summary(
    gateway.auth?.user('admin')?.id ?? '',
    new Date().toISOString().slice(0, 10),
    new Date().toISOString().slice(0, 10),
  )
  t.is(usage?.total.requests, 2, 'both requests are in the ledger (the cancelled one too)')

  // The same for an answer asked for whole (it travels as one RPC request and one reply).
  const whole = new AbortController()
  const pending = fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: LOOP_MODEL, prompt: 'a', max_tokens: 100_000 }),
    signal: whole.signal,
  }).catch(() => null)
  t.ok(
    await until(() => gateway.router.list()[0]?.inflight === 1, 5_000, 10),
    'the whole-answer request runs',
  )
  const abortedAt = Date.now()
  whole.abort()
  await pending
  t.ok(await until(() => gateway.router.list()[0]?.inflight === 0, 5_000), 'its slot is freed')
  t.ok(Date.now() - abortedAt < 3_000, 'within moments, not after 100,000 tokens')
})
