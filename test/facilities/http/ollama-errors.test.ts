import test from 'brittle'
import { OllamaCompatServer } from '../../../facilities/http/ollama-api.js'
import { TINY_MODEL_NAME } from '../../../facilities/tiny-model/tiny-model.js'
import { MeshError } from '../../../kernel/errors.js'
import type { InferenceSource } from '../../../kernel/wire.js'
import {
  expectError,
  type Json,
  lines,
  MAX_BODY_BYTES,
  post,
  postChunked,
  STEP1_TEXT,
  setup,
} from './ollama-fixture.js'

test('ollama-api: bad request bodies get 400 with an {"error"} naming the problem', async (t) => {
  const { url } = await setup(t)
  const user = [{ role: 'user', content: 'abc' }]

  await expectError(t, await post(`${url}/api/chat`, '{"model": '), 400, 'malformed JSON')
  await expectError(t, await post(`${url}/api/chat`, ''), 400, 'empty body', /missing request body/)
  await expectError(t, await post(`${url}/api/chat`, '[1,2]'), 400, 'JSON that is not an object')
  await expectError(
    t,
    await post(`${url}/api/chat`, { messages: user }),
    400,
    'missing model',
    /model is required/,
  )
  await expectError(t, await post(`${url}/api/generate`, { prompt: 'abc' }), 400, 'generate missing model')
  await expectError(t, await post(`${url}/api/show`, {}), 400, 'show missing model')
  await expectError(t, await post(`${url}/api/chat`, { model: 7, messages: user }), 400, 'model not a string')
  await expectError(
    t,
    await post(`${url}/api/chat`, { model: TINY_MODEL_NAME, messages: [{ role: 'robot', content: 'x' }] }),
    400,
    'bad role',
    /messages\.0\.role/,
  )
  await expectError(
    t,
    await post(`${url}/api/generate`, {
      model: TINY_MODEL_NAME,
      prompt: 'a',
      options: { temperature: 'hot' },
    }),
    400,
    'option of the wrong type',
    /options\.temperature/,
  )
  await expectError(
    t,
    await post(`${url}/api/generate`, { model: TINY_MODEL_NAME, prompt: 'a', options: { temperature: -1 } }),
    400,
    'option out of range (checked by the engine)',
  )
  await expectError(
    t,
    await post(`${url}/api/generate`, { model: TINY_MODEL_NAME, prompt: 'a', stream: 'yes' }),
    400,
    'stream not a boolean',
  )
  for (const [field, value] of [
    ['suffix', 'xyz'],
    ['template', '{{ .Prompt }}'],
    ['images', ['aGk=']],
  ] as const) {
    await expectError(
      t,
      await post(`${url}/api/generate`, { model: TINY_MODEL_NAME, prompt: 'abc', [field]: value }),
      400,
      `unsupported ${field}`,
      new RegExp(`^${field} is not supported`),
    )
  }
  await expectError(
    t,
    await post(`${url}/api/chat`, {
      model: TINY_MODEL_NAME,
      messages: [{ role: 'user', content: 'abc', images: ['aGk='] }],
    }),
    400,
    'unsupported images',
  )
})

test('ollama-api: unknown models 404, bodies over the limit 413, wrong methods 405, unknown paths 404', async (t) => {
  const { url } = await setup(t)
  const user = [{ role: 'user', content: 'abc' }]

  for (const path of ['/api/chat', '/api/generate', '/api/show', '/api/embed']) {
    const body =
      path === '/api/chat'
        ? { model: 'nope', messages: user }
        : { model: 'nope', prompt: 'abc', input: 'abc' }
    await expectError(
      t,
      await post(`${url}${path}`, body),
      404,
      `${path} unknown model`,
      /^model 'nope' not found$/,
    )
  }
  await expectError(t, await post(`${url}/api/generate`, { model: 'nope' }), 404, 'load of an unknown model')

  const giant = 'x'.repeat(MAX_BODY_BYTES + 1)
  await expectError(
    t,
    await post(`${url}/api/generate`, { model: TINY_MODEL_NAME, prompt: giant }),
    413,
    'body over the limit (Content-Length)',
  )
  const started = Date.now()
  const chunked = await postChunked(url, '/api/chat', 64 * MAX_BODY_BYTES)
  t.is(chunked.status, 413, 'chunked body over the limit')
  t.ok(String((JSON.parse(chunked.body) as Json).error).includes('limit'), chunked.body)
  t.comment(`chunked 413 after ${Date.now() - started} ms`)

  const wrongMethod = await fetch(`${url}/api/chat`)
  await expectError(t, wrongMethod, 405, 'GET on a POST route')
  t.is(wrongMethod.headers.get('allow'), 'POST')
  const wrongMethod2 = await post(`${url}/api/tags`, {})
  await expectError(t, wrongMethod2, 405, 'POST on a GET route')
  t.is(wrongMethod2.headers.get('allow'), 'GET, HEAD')
  const del = await fetch(`${url}/api/generate`, { method: 'DELETE' })
  await expectError(t, del, 405, 'DELETE')

  const unknown = await fetch(`${url}/api/push`)
  t.is(unknown.status, 404)
  t.alike(await unknown.json(), { error: '404 page not found' })
  const unknown2 = await fetch(`${url}/v1/whatever?x=1`)
  t.is(unknown2.status, 404)
  await unknown2.body?.cancel()

  const ok = (await (
    await post(`${url}/api/chat?foo=bar`, { model: TINY_MODEL_NAME, messages: user, stream: false })
  ).json()) as Json
  t.is((ok.message as Json).content, STEP1_TEXT, 'still serving after all that (query string ignored)')
})

test('ollama-api: a source error mid-stream ends the stream with an {"error"} line', async (t) => {
  const { url } = await setup(t, {
    source: (b) => ({
      listModels: () => b.listModels(),
      showModel: (n) => b.showModel(n),
      runningModels: () => b.runningModels(),
      embed: (r, cb) => b.embed(r, cb),
      chat: (r, cb) => b.chat(r, cb),
      // The real engine produces text; then the "mesh" loses the processor.
      generate: async (r, cb) => {
        await b.generate(r, { ...cb, onToken: (s) => cb?.onToken?.(s) })
        throw new MeshError('ERR_STREAM_BROKEN', 'processor went away')
      },
    }),
  })
  const frames = await lines(await post(`${url}/api/generate`, { model: TINY_MODEL_NAME, prompt: 'abc' }))
  const last = frames.pop() as Json
  t.alike(last, { error: 'processor went away' })
  t.is(frames.map((f) => f.response).join(''), STEP1_TEXT, 'the text before the error was delivered')

  const early = await post(`${url}/api/generate`, {
    model: TINY_MODEL_NAME,
    prompt: '',
    system: 'x',
    stream: false,
  })
  await expectError(t, early, 502, 'error before any output keeps its status')
})

test('ollama-api: 429 carries Retry-After; the server closes twice safely', async (t) => {
  const limited: InferenceSource = {
    listModels: async () => [],
    showModel: async () => {
      throw new MeshError('ERR_RATE_LIMITED', 'slow down', { retryAfterMs: 1500 })
    },
    runningModels: async () => [],
    embed: async () => {
      throw new MeshError('ERR_BUSY', 'all processors busy')
    },
    chat: async () => {
      throw MeshError.noProcessor(TINY_MODEL_NAME)
    },
    generate: async () => {
      throw new Error('boom')
    },
  }
  const server = new OllamaCompatServer({ source: limited })
  t.teardown(() => server.close())
  await server.listen()
  t.ok(server.url.startsWith('http://127.0.0.1:'), server.url)
  const url = server.url

  const rl = await post(`${url}/api/show`, { model: 'm' })
  t.is(rl.headers.get('retry-after'), '2', 'seconds, rounded up')
  await expectError(t, rl, 429, 'rate limited', /^slow down$/)
  await expectError(t, await post(`${url}/api/embed`, { model: 'm', input: 'x' }), 503, 'busy')
  await expectError(
    t,
    await post(`${url}/api/chat`, { model: 'm', messages: [{ role: 'user', content: 'x' }] }),
    503,
    'no processor',
  )
  await expectError(
    t,
    await post(`${url}/api/generate`, { model: 'm', prompt: 'x' }),
    500,
    'unexpected error',
  )
  t.alike(await (await fetch(`${url}/api/tags`)).json(), { models: [] })

  await server.close()
  await server.close()
  const after = await fetch(`${url}/api/tags`).then(
    () => 'answered',
    (err: unknown) => (err instanceof Error ? err.message : String(err)),
  )
  t.is(after, 'fetch failed', 'a closed server answers nothing')
})
