/**
 * A live gateway's answers, as docs/openapi.json documents them: every route (Ollama, OpenAI,
 * probes, metrics, CORS preflights) with valid and invalid requests — 200 (whole and
 * streamed), 400, 401, 403, 404, 405, 413, 429 — each response's status, content type,
 * headers and body (or every frame of its stream) checked against the document.
 */
import test, { type Test } from 'brittle'
import { chat } from '../../helpers/http.js'
import { apiKeyFor, spawnProcessor, startGateway, testnet, until } from '../../helpers/mesh.js'
import { assertConforms, openapi } from '../../helpers/openapi.js'

const APP = 'https://app.example.com'
const MAX_BODY = 16 * 1024

interface Call {
  /** The bearer credential; none: no Authorization header. */
  key?: string
  body?: unknown
  /** The body as sent, instead of `body` as JSON. */
  raw?: string
  headers?: Record<string, string>
}

/** Calls the gateway, asserts the status, then that the whole response is as documented; returns the body. */
async function call(t: Test, url: string, method: string, path: string, status: number, c: Call = {}) {
  const headers: Record<string, string> = { ...c.headers }
  if (c.key !== undefined) headers.Authorization = `Bearer ${c.key}`
  const body = c.raw ?? (c.body === undefined ? undefined : JSON.stringify(c.body))
  if (body !== undefined) headers['Content-Type'] = 'application/json'
  const res = await fetch(`${url}${path}`, { method, headers, ...(body !== undefined ? { body } : {}) })
  t.is(res.status, status, `${method} ${path}: ${status}`)
  if (c.body !== undefined && method === 'POST' && status !== 405) {
    // The request schema too: what the gateway takes passes it, what it refuses as malformed does not.
    const errors = openapi().checkRequest(method, path, c.body)
    if (status === 400) t.ok(errors.length > 0, `${method} ${path}: the refused request is not as documented`)
    else t.alike(errors, [], `${method} ${path}: the request is as documented`)
  }
  return assertConforms(t, method, path, res)
}

async function ollamaRoutes(t: Test, url: string, key: string) {
  await call(t, url, 'GET', '/', 200)
  await call(t, url, 'HEAD', '/', 200)
  await call(t, url, 'POST', '/', 405, { body: {} })
  await call(t, url, 'GET', '/api/version', 200)
  await call(t, url, 'GET', '/api/tags', 200, { key })
  await call(t, url, 'HEAD', '/api/tags', 200, { key })
  await call(t, url, 'POST', '/api/tags', 405, { key, body: {} })
  await call(t, url, 'GET', '/api/ps', 200, { key })
  await call(t, url, 'POST', '/api/show', 200, { key, body: { model: 'echo' } })
  await call(t, url, 'POST', '/api/show', 404, { key, body: { model: 'no-such-model' } })
  await call(t, url, 'POST', '/api/show', 400, { key, body: {} })
  const gen = { model: 'echo', prompt: 'count these words' }
  await call(t, url, 'POST', '/api/generate', 200, { key, body: { ...gen, stream: false } })
  const frames = await call(t, url, 'POST', '/api/generate', 200, { key, body: gen })
  t.ok(frames.trim().split('\n').length > 1, 'generate streams pieces, then the last line')
  await call(t, url, 'POST', '/api/generate', 200, { key, body: { model: 'echo' } })
  await call(t, url, 'POST', '/api/generate', 400, { key, body: { ...gen, options: { temperature: 'hot' } } })
  await call(t, url, 'POST', '/api/generate', 400, { key, raw: '{"model": ' })
  await call(t, url, 'GET', '/api/generate', 405, { key })
  await call(t, url, 'POST', '/api/chat', 200, { key, body: chat() })
  await call(t, url, 'POST', '/api/chat', 200, { key, body: chat({ stream: true }) })
  await call(t, url, 'POST', '/api/chat', 200, { key, body: { model: 'echo', messages: [] } })
  await call(t, url, 'POST', '/api/chat', 404, { key, body: chat({ model: 'no-such-model', stream: true }) })
  await call(t, url, 'POST', '/api/chat', 400, { key, body: chat({ messages: [{ role: 'robot' }] }) })
  await call(t, url, 'POST', '/api/chat', 413, { key, body: chat({ pad: 'x'.repeat(MAX_BODY) }) })
  await call(t, url, 'POST', '/api/chat', 401, { body: chat() })
  await call(t, url, 'POST', '/api/chat', 401, { key: 'not-a-key', body: chat() })
  await call(t, url, 'POST', '/api/embed', 200, { key, body: { model: 'echo', input: ['a b', 'c'] } })
  await call(t, url, 'POST', '/api/embed', 400, { key, body: { model: 'echo', input: 3 } })
  await call(t, url, 'POST', '/api/embeddings', 200, { key, body: { model: 'echo', prompt: 'a b' } })
  await call(t, url, 'GET', '/api/no-such-route', 404, { key })
  await call(t, url, 'GET', '/api/no-such-route', 401)
}

async function openAIRoutes(t: Test, url: string, key: string) {
  await call(t, url, 'GET', '/v1/models', 200, { key })
  await call(t, url, 'HEAD', '/v1/models', 200, { key })
  await call(t, url, 'POST', '/v1/models', 405, { key, body: {} })
  await call(t, url, 'GET', '/v1/models', 401)
  await call(t, url, 'GET', '/v1/models/echo', 200, { key })
  await call(t, url, 'GET', '/v1/models/no-such-model', 404, { key })
  await call(t, url, 'GET', '/v1/models/%E0%A4%A', 400, { key })
  const path = '/v1/chat/completions'
  await call(t, url, 'POST', path, 200, { key, body: chat() })
  const sse = await call(t, url, 'POST', path, 200, {
    key,
    body: chat({ stream: true, stream_options: { include_usage: true } }),
  })
  t.ok(sse.trimEnd().endsWith('data: [DONE]'), 'the stream ends with [DONE]')
  await call(t, url, 'POST', path, 400, { key, body: chat({ messages: [] }) })
  await call(t, url, 'POST', path, 400, { key, body: chat({ temperature: 5 }) })
  await call(t, url, 'POST', path, 400, { key, raw: 'not json' })
  await call(t, url, 'POST', path, 404, { key, body: chat({ model: 'no-such-model', stream: true }) })
  await call(t, url, 'POST', path, 413, { key, body: chat({ pad: 'x'.repeat(MAX_BODY) }) })
  await call(t, url, 'POST', path, 401, { key: 'not-a-key', body: chat() })
  await call(t, url, 'GET', path, 405, { key })
  const completion = { model: 'echo', prompt: 'count these words', max_tokens: 30 }
  await call(t, url, 'POST', '/v1/completions', 200, { key, body: completion })
  await call(t, url, 'POST', '/v1/completions', 200, {
    key,
    body: { ...completion, stream: true, stream_options: { include_usage: true } },
  })
  await call(t, url, 'POST', '/v1/completions', 400, { key, body: { model: 'echo' } })
  const embed = { model: 'echo', input: ['a b', 'c'] }
  await call(t, url, 'POST', '/v1/embeddings', 200, { key, body: { ...embed, encoding_format: 'float' } })
  await call(t, url, 'POST', '/v1/embeddings', 200, { key, body: { ...embed, encoding_format: 'base64' } })
  await call(t, url, 'POST', '/v1/embeddings', 400, { key, body: { ...embed, input: [] } })
  await call(t, url, 'GET', '/v1/no-such-route', 404, { key })
  await call(t, url, 'GET', '/v1/no-such-route', 401)
}

async function openRoutes(t: Test, url: string, key: string) {
  await call(t, url, 'GET', '/healthz', 200)
  await call(t, url, 'HEAD', '/healthz', 200)
  await call(t, url, 'POST', '/healthz', 405, { body: {} })
  await call(t, url, 'GET', '/readyz', 200)
  await call(t, url, 'GET', '/metrics', 200)
  await call(t, url, 'POST', '/metrics', 405, { body: {} })
  const preflight = { Origin: APP, 'Access-Control-Request-Method': 'POST' }
  await call(t, url, 'OPTIONS', '/v1/chat/completions', 204, { headers: preflight })
  await call(t, url, 'OPTIONS', '/api/chat', 204, { headers: preflight })
  const other = { ...preflight, Origin: 'https://elsewhere.example.net' }
  await call(t, url, 'OPTIONS', '/api/chat', 403, { headers: other })
  // Probes come before CORS; an OPTIONS that is no preflight is an ordinary request.
  await call(t, url, 'OPTIONS', '/healthz', 405, { headers: preflight })
  await call(t, url, 'OPTIONS', '/api/tags', 405, { key })
  await call(t, url, 'OPTIONS', '/v1/models', 405, { key })
  await call(t, url, 'OPTIONS', '/api/tags', 401)
  // A page on the allowed origin: its answers carry the CORS headers, as documented.
  await call(t, url, 'POST', '/v1/chat/completions', 200, { key, body: chat(), headers: { Origin: APP } })
  await call(t, url, 'POST', '/api/chat', 401, { body: chat(), headers: { Origin: APP } })
}

test('openapi: every route of a live gateway answers as docs/openapi.json says', {
  timeout: 120_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, {
    http: { enabled: true, port: 0, corsOrigins: [APP], maxBodyBytes: MAX_BODY },
  })
  await spawnProcessor(t, bootstrap, ['--store', await t.tmp(), '--backend', 'echo'])
  t.ok(await until(() => gateway.router.size === 1), 'the gateway sees the processor')
  const url = gateway.httpUrl as string
  const key = await apiKeyFor(gateway)

  await ollamaRoutes(t, url, key)
  await openAIRoutes(t, url, key)
  await openRoutes(t, url, key)

  // Limits: a key of another model (403), a user allowed one request a minute (429, Retry-After).
  const user = gateway.auth?.user('admin')
  const other = (await gateway.auth?.createKey(user?.id as string, { name: 'other', models: ['other'] }))?.key
  await call(t, url, 'POST', '/api/show', 403, { key: other as string, body: { model: 'echo' } })
  const slow = await apiKeyFor(gateway, 'slowpoke', 'user', { rpm: 1 })
  await call(t, url, 'POST', '/api/chat', 200, { key: slow, body: chat() })
  await call(t, url, 'POST', '/api/chat', 429, { key: slow, body: chat() })
  await call(t, url, 'POST', '/v1/chat/completions', 429, { key: slow, body: chat() })

  await newRoutes(t, url, key)
})

/**
 * Anthropic's /v1/messages and OpenAI's /v1/responses come with other branches of issue 19:
 * documented now from the official APIs; where this gateway serves them, checked here too.
 */
async function newRoutes(t: Test, url: string, key: string) {
  const messages = {
    model: 'echo',
    max_tokens: 64,
    messages: [{ role: 'user', content: 'count these words' }],
  }
  const responses = { model: 'echo', input: 'count these words' }
  for (const [path, body, headers] of [
    ['/v1/messages', messages, { 'x-api-key': key, 'anthropic-version': '2023-06-01' }],
    ['/v1/responses', responses, { Authorization: `Bearer ${key}` }],
  ] as const) {
    // Served at all? (A bearer key works on every route; here an unknown endpoint is a 404.)
    const probe = await fetch(`${url}${path}`, { method: 'GET', headers: { Authorization: `Bearer ${key}` } })
    if (probe.status === 404) {
      await probe.text()
      t.comment(`${path} is not served by this build yet: its live check waits for the merge`)
      continue
    }
    t.is(probe.status, 405, `GET ${path}: 405`)
    await assertConforms(t, 'GET', path, probe)
    await call(t, url, 'POST', path, 401, { body })
    for (const stream of [false, true]) {
      const res = await fetch(`${url}${path}`, {
        method: 'POST',
        headers: { ...headers, 'Content-Type': 'application/json' },
        body: JSON.stringify({ ...body, stream }),
      })
      t.is(res.status, 200, `${path}${stream ? ', streamed' : ''}: 200`)
      await assertConforms(t, 'POST', path, res)
    }
    await call(t, url, 'POST', path, 404, { key, body: { ...body, model: 'no-such-model' } })
  }
}
