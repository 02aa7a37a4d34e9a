import { request } from 'node:http'
import { join } from 'node:path'
import type { Test } from 'brittle'
import test from 'brittle'
import {
  LlamaCppBackend,
  type LlamaCppBackendOptions,
} from '../../../facilities/backends/llamacpp/llamacpp.backend.js'
import { OllamaCompatServer } from '../../../facilities/http/ollama-api.js'
import { TINY_MODEL_NAME, writeTinyModel } from '../../../facilities/tiny-model/tiny-model.js'
import { MeshError } from '../../../kernel/errors.js'
import type { GenerateCallbacks, GenerationResult, InferenceSource } from '../../../kernel/wire.js'
import { rejectsWith } from '../../helpers/assert.js'
import { closedPort } from '../../helpers/mesh.js'

const STEP1_TEXT = 'defghijklmnopqrstuvwxyz'
const GREEDY = { temperature: 0 }
const MAX_BODY_BYTES = 64 * 1024
const VERSION = '9.8.7'
const METRIC_FIELDS = [
  'total_duration',
  'load_duration',
  'prompt_eval_count',
  'prompt_eval_duration',
  'eval_count',
  'eval_duration',
] as const

type Json = Record<string, unknown>

interface Setup {
  backend: LlamaCppBackend
  url: string
}

/** The tiny model in a fresh folder, a llama.cpp backend over it and the Ollama API in front, all closed on teardown. */
async function setup(
  t: Test,
  opts: { backend?: Partial<LlamaCppBackendOptions>; source?: (b: LlamaCppBackend) => InferenceSource } = {},
): Promise<Setup> {
  const modelsDir = await t.tmp()
  await writeTinyModel(join(modelsDir, `${TINY_MODEL_NAME}.gguf`))
  const backend = new LlamaCppBackend({ modelsDir, threads: 1, ...opts.backend })
  t.teardown(() => backend.close(), { order: 2 })
  await backend.open()
  const server = new OllamaCompatServer({
    source: opts.source ? opts.source(backend) : backend,
    host: '127.0.0.1',
    port: 0,
    version: VERSION,
    maxBodyBytes: MAX_BODY_BYTES,
  })
  t.teardown(() => server.close(), { order: 1 })
  await server.listen()
  return { backend, url: server.url }
}

function post(url: string, body: unknown): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  })
}

/** The frames of an NDJSON body; every line, the last one included, must end with a newline. */
async function lines(res: Response): Promise<Json[]> {
  const text = await res.text()
  if (!text.endsWith('\n'))
    throw new Error(`NDJSON body does not end with a newline: ${JSON.stringify(text)}`)
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Json)
}

function checkMetrics(t: Test, frame: Json, what: string): void {
  for (const k of METRIC_FIELDS) {
    const v = frame[k]
    t.ok(typeof v === 'number' && Number.isInteger(v) && v >= 0, `${what}: ${k} = ${String(v)} (integer)`)
  }
  t.ok((frame.eval_count as number) > 0, `${what}: eval_count > 0`)
  t.ok((frame.prompt_eval_count as number) > 0, `${what}: prompt_eval_count > 0`)
  t.ok((frame.total_duration as number) >= (frame.eval_duration as number), `${what}: total >= eval`)
}

async function expectError(t: Test, res: Response, status: number, what: string, pattern?: RegExp) {
  t.is(res.status, status, `${what}: status ${status}`)
  t.ok(res.headers.get('content-type')?.startsWith('application/json'), `${what}: JSON error body`)
  const body = (await res.json()) as Json
  t.is(typeof body.error, 'string', `${what}: {"error": "${String(body.error)}"}`)
  if (pattern) t.ok(pattern.test(String(body.error)), `${what}: message matches ${pattern}`)
}

/** Sends a chunked body (no Content-Length) and resolves with the status and body received. */
function postChunked(
  url: string,
  path: string,
  totalBytes: number,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}${path}`, { method: 'POST', headers: { 'Content-Type': 'application/json' } })
    req.on('response', (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => {
        body += d
      })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      res.on('error', reject)
    })
    // The server cuts the upload short; a write error after the reply is expected.
    req.on('error', () => {})
    const chunk = Buffer.alloc(16 * 1024, 0x20)
    let sent = 0
    const pump = () => {
      while (sent < totalBytes) {
        sent += chunk.length
        if (!req.write(chunk)) return void req.once('drain', pump)
      }
      req.end()
    }
    pump()
  })
}

test('ollama-api: root, version, tags, show and ps have Ollama shapes', async (t) => {
  const { url } = await setup(t)

  const root = await fetch(`${url}/`)
  t.is(root.status, 200)
  t.is(await root.text(), 'Ollama is running')
  const head = await fetch(`${url}/`, { method: 'HEAD' })
  t.is(head.status, 200, 'HEAD /')

  const version = await fetch(`${url}/api/version`)
  t.alike(await version.json(), { version: VERSION })

  const tags = (await (await fetch(`${url}/api/tags`)).json()) as { models: Json[] }
  t.is(tags.models.length, 1)
  const tiny = tags.models[0] as Json
  t.is(tiny.name, TINY_MODEL_NAME)
  t.is(tiny.model, TINY_MODEL_NAME)
  t.ok(typeof tiny.size === 'number' && tiny.size > 0, 'size')
  t.ok(/^[0-9a-f]{64}$/.test(String(tiny.digest)), 'sha256 digest')
  t.ok(!Number.isNaN(Date.parse(String(tiny.modified_at))), 'modified_at')
  t.alike(tiny.details, {
    parent_model: '',
    format: 'gguf',
    family: 'llama',
    families: ['llama'],
    parameter_size: '0.9M',
    quantization_level: 'F32',
  })

  const shown = (await (await post(`${url}/api/show`, { model: TINY_MODEL_NAME })).json()) as Json
  for (const k of [
    'modelfile',
    'parameters',
    'template',
    'details',
    'model_info',
    'capabilities',
    'modified_at',
  ]) {
    t.ok(k in shown, `show has ${k}`)
  }
  t.ok(String(shown.modelfile).includes(`FROM ${TINY_MODEL_NAME}`), 'modelfile names the model')
  t.ok(/^PARAMETER num_ctx 2048$/m.test(String(shown.modelfile)), 'modelfile lists the parameters')
  t.ok(/^num_ctx\s+2048$/m.test(String(shown.parameters)))
  t.is((shown.model_info as Json)['general.architecture'], 'llama')
  t.ok(Array.isArray(shown.capabilities) && shown.capabilities.includes('completion'))
  t.alike(shown.details, tiny.details)
  const byName = await post(`${url}/api/show`, { name: TINY_MODEL_NAME })
  t.is(byName.status, 200, 'show accepts the legacy `name` field')
  await byName.body?.cancel()

  const idle = (await (await fetch(`${url}/api/ps`)).json()) as { models: Json[] }
  t.alike(idle.models, [], 'nothing loaded yet')
  const load = await post(`${url}/api/generate`, { model: TINY_MODEL_NAME })
  const loaded = (await load.json()) as Json
  t.is(loaded.done, true, 'empty prompt loads the model')
  t.is(loaded.done_reason, 'load')
  t.is(loaded.response, '')
  const ps = (await (await fetch(`${url}/api/ps`)).json()) as { models: Json[] }
  t.is(ps.models.length, 1)
  const running = ps.models[0] as Json
  t.is(running.name, TINY_MODEL_NAME)
  t.ok(Date.parse(String(running.expires_at)) > Date.now(), 'expires_at in the future')
  t.is(running.size_vram, 0, 'size_vram')
  t.alike(running.details, tiny.details)

  const chatLoad = (await (
    await post(`${url}/api/chat`, { model: TINY_MODEL_NAME, messages: [] })
  ).json()) as Json
  t.alike(chatLoad.message, { role: 'assistant', content: '' })
  t.is(chatLoad.done_reason, 'load', 'chat with no messages loads the model')
})

test('ollama-api: streamed chat and generate are NDJSON frames that add up to the text', async (t) => {
  const { url } = await setup(t)

  const chat = await post(`${url}/api/chat`, {
    model: TINY_MODEL_NAME,
    messages: [{ role: 'user', content: 'abc' }],
    options: GREEDY,
  })
  t.is(chat.status, 200)
  t.is(chat.headers.get('content-type'), 'application/x-ndjson')
  t.is(chat.headers.get('x-accel-buffering'), 'no')
  const chatFrames = await lines(chat)
  const chatLast = chatFrames.pop() as Json
  t.ok(chatFrames.length > 1, `${chatFrames.length} content frames`)
  t.ok(
    chatFrames.every(
      (f) =>
        f.done === false &&
        f.model === TINY_MODEL_NAME &&
        !Number.isNaN(Date.parse(String(f.created_at))) &&
        (f.message as Json).role === 'assistant',
    ),
    'content frames: model, created_at, assistant message, done false',
  )
  t.is(chatFrames.map((f) => (f.message as Json).content).join(''), STEP1_TEXT, 'frames add up to the text')
  t.is(chatLast.done, true)
  t.is(chatLast.done_reason, 'stop')
  t.alike(chatLast.message, { role: 'assistant', content: '' })
  checkMetrics(t, chatLast, 'chat final frame')
  t.is(chatLast.eval_count, STEP1_TEXT.length, 'one token per letter')

  const gen = await post(`${url}/api/generate`, { model: TINY_MODEL_NAME, prompt: 'abc', options: GREEDY })
  t.is(gen.status, 200)
  t.is(gen.headers.get('content-type'), 'application/x-ndjson')
  const genFrames = await lines(gen)
  const genLast = genFrames.pop() as Json
  t.ok(genFrames.length > 1, `${genFrames.length} content frames`)
  t.ok(genFrames.every((f) => f.done === false && typeof f.response === 'string'))
  t.is(genFrames.map((f) => f.response).join(''), STEP1_TEXT)
  t.is(genLast.done, true)
  t.is(genLast.response, '')
  t.is(genLast.done_reason, 'stop')
  checkMetrics(t, genLast, 'generate final frame')

  const raw = await lines(
    await post(`${url}/api/generate`, {
      model: TINY_MODEL_NAME,
      prompt: 'abc',
      raw: true,
      system: 'ignored in raw mode',
      options: { ...GREEDY, num_predict: 5 },
      keep_alive: '5m',
      context: [1, 2, 3],
      format: '',
      images: [],
      think: false,
    }),
  )
  t.is(raw.map((f) => f.response ?? '').join(''), 'defgh', 'raw + num_predict; unset features are ignored')
  t.is(raw.at(-1)?.done_reason, 'length')
})

test('ollama-api: stream:false answers one object with the whole text', async (t) => {
  const { url } = await setup(t)

  const chat = await post(`${url}/api/chat`, {
    model: TINY_MODEL_NAME,
    messages: [{ role: 'user', content: 'abc' }],
    options: { ...GREEDY, stop: ['mno'] },
    stream: false,
  })
  t.is(chat.status, 200)
  t.ok(chat.headers.get('content-type')?.startsWith('application/json'))
  const c = (await chat.json()) as Json
  t.alike(c.message, { role: 'assistant', content: 'defghijkl' }, 'options.stop applied')
  t.is(c.done, true)
  t.is(c.done_reason, 'stop')
  t.is(c.model, TINY_MODEL_NAME)
  checkMetrics(t, c, 'chat')

  const gen = (await (
    await post(`${url}/api/generate`, {
      model: `${TINY_MODEL_NAME}:latest`,
      prompt: 'ABC',
      system: 'XYZ',
      options: { temperature: 0, top_k: 10, top_p: 0.5, min_p: 0, seed: 3, repeat_penalty: 1, num_ctx: 512 },
      stream: false,
    })
  ).json()) as Json
  t.is(gen.response, 'DEFGHIJKLMNOPQRSTUVWXYZ', 'every mapped option accepted')
  t.is(gen.model, `${TINY_MODEL_NAME}:latest`, 'echoes the requested name')
  t.is(gen.done, true)
  checkMetrics(t, gen, 'generate')
})

test('ollama-api: embed and legacy embeddings', async (t) => {
  const { url } = await setup(t)

  const one = (await (
    await post(`${url}/api/embed`, { model: TINY_MODEL_NAME, input: 'abc' })
  ).json()) as Json
  t.is(one.model, TINY_MODEL_NAME)
  const vectors = one.embeddings as number[][]
  t.is(vectors.length, 1)
  t.is(vectors[0]?.length, 128, 'n_embd floats')
  t.ok(typeof one.total_duration === 'number' && Number.isInteger(one.total_duration))
  t.ok(typeof one.load_duration === 'number' && Number.isInteger(one.load_duration))
  t.ok((one.prompt_eval_count as number) > 0)

  const many = (await (
    await post(`${url}/api/embed`, { model: TINY_MODEL_NAME, input: ['abc', 'xyz', 'abc'], truncate: true })
  ).json()) as Json
  const three = many.embeddings as number[][]
  t.is(three.length, 3)
  t.alike(three[0], three[2], 'same text, same vector')
  t.alike(three[0], vectors[0])

  const none = (await (await post(`${url}/api/embed`, { model: TINY_MODEL_NAME, input: [] })).json()) as Json
  t.alike(none.embeddings, [])

  const legacy = (await (
    await post(`${url}/api/embeddings`, { model: TINY_MODEL_NAME, prompt: 'abc' })
  ).json()) as Json
  t.alike(Object.keys(legacy), ['embedding'])
  t.alike(legacy.embedding, vectors[0])
  const empty = (await (
    await post(`${url}/api/embeddings`, { model: TINY_MODEL_NAME, prompt: '' })
  ).json()) as Json
  t.alike(empty, { embedding: [] })

  await expectError(
    t,
    await post(`${url}/api/embed`, { model: 'nope', input: 'abc' }),
    404,
    'embed unknown model',
  )
  await expectError(
    t,
    await post(`${url}/api/embeddings`, { model: 'nope', prompt: 'abc' }),
    404,
    'embeddings unknown',
  )
  await expectError(t, await post(`${url}/api/embed`, { model: TINY_MODEL_NAME, input: 5 }), 400, 'bad input')
  await expectError(
    t,
    await post(`${url}/api/embed`, { model: TINY_MODEL_NAME, input: 'abc', dimensions: 8 }),
    400,
    'dimensions',
  )
})

test('ollama-api: errors have Ollama statuses and {"error"} bodies', async (t) => {
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
    ['format', 'json'],
    ['tools', [{ type: 'function', function: { name: 'f' } }]],
    ['think', true],
  ] as const) {
    await expectError(
      t,
      await post(`${url}/api/chat`, { model: TINY_MODEL_NAME, messages: user, [field]: value }),
      400,
      `unsupported ${field}`,
      new RegExp(`${field} is not supported`),
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

  const unknown = await fetch(`${url}/api/pull`)
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

/** Sleeps without yielding, like an engine busy computing the next token. */
function busy(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
}

/**
 * The engine with each token delivered `msPerToken` later, like a slower
 * model, so a client can hang up mid-generation; remembers the last outcome.
 */
class SlowSource implements InferenceSource {
  last: Promise<GenerationResult | MeshError> | null = null
  constructor(
    private readonly inner: InferenceSource,
    private readonly msPerToken: number,
  ) {}
  private slow(cb: GenerateCallbacks = {}): GenerateCallbacks {
    return {
      ...cb,
      onToken: (text) => {
        busy(this.msPerToken)
        cb.onToken?.(text)
      },
    }
  }
  private track(p: Promise<GenerationResult>): Promise<GenerationResult> {
    this.last = p.catch((err: unknown) => MeshError.from(err))
    return p
  }
  listModels = () => this.inner.listModels()
  showModel = (name: string) => this.inner.showModel(name)
  runningModels = () => this.inner.runningModels()
  embed: InferenceSource['embed'] = (req, cb) => this.inner.embed(req, cb)
  chat: InferenceSource['chat'] = (req, cb) => this.track(this.inner.chat(req, this.slow(cb)))
  generate: InferenceSource['generate'] = (req, cb) => this.track(this.inner.generate(req, this.slow(cb)))
}

test('ollama-api: a client hanging up mid-stream aborts the generation and frees the engine', async (t) => {
  let slow: SlowSource | null = null
  const { url } = await setup(t, {
    backend: { maxParallel: 1 },
    source: (b) => {
      slow = new SlowSource(b, 25)
      return slow
    },
  })
  const source = slow as unknown as SlowSource

  for (const [path, body] of [
    ['/api/generate', { model: TINY_MODEL_NAME, prompt: 'abc', options: GREEDY }],
    ['/api/chat', { model: TINY_MODEL_NAME, messages: [{ role: 'user', content: 'abc' }], options: GREEDY }],
  ] as const) {
    const controller = new AbortController()
    const res = await fetch(`${url}${path}`, {
      method: 'POST',
      body: JSON.stringify(body),
      signal: controller.signal,
    })
    t.is(res.status, 200)
    const reader = res.body?.getReader()
    const first = await reader?.read()
    t.ok(first && !first.done && first.value.length > 0, `${path}: got the first frame`)
    controller.abort()
    await reader?.cancel().catch(() => {})

    const outcome = await source.last
    if (outcome instanceof MeshError) {
      t.is(outcome.code, 'ERR_CANCELLED', `${path}: cancelled (${outcome.message})`)
    } else {
      t.is(outcome?.doneReason, 'cancelled', `${path}: generation stopped after '${outcome?.text}'`)
      t.ok((outcome?.text.length ?? 99) < STEP1_TEXT.length, `${path}: stopped early`)
    }

    // maxParallel 1: this would wait forever if the sequence had not been released.
    const next = (await (
      await post(`${url}/api/generate`, {
        model: TINY_MODEL_NAME,
        prompt: 'ABC',
        options: GREEDY,
        stream: false,
      })
    ).json()) as Json
    t.is(next.response, 'DEFGHIJKLMNOPQRSTUVWXYZ', `${path}: the engine serves the next request`)
  }
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

test('ollama-api: a server closed while it binds does not stay listening', async (t) => {
  const port = await closedPort()
  const source: InferenceSource = {
    listModels: async () => [],
    showModel: async () => {
      throw MeshError.modelNotFound('m')
    },
    runningModels: async () => [],
    embed: async () => ({ embeddings: [], promptTokens: 0, totalMs: 0, loadMs: 0 }),
    chat: async () => {
      throw new Error('unused')
    },
    generate: async () => {
      throw new Error('unused')
    },
  }
  const server = new OllamaCompatServer({ source, port })
  const listening = server.listen()
  await server.close()
  await rejectsWith(t, listening, 'ERR_UNAVAILABLE', 'listen fails: the server was closed meanwhile')
  const after = await fetch(`http://127.0.0.1:${port}/api/tags`).then(
    () => 'answered',
    (err: unknown) => (err instanceof Error ? err.message : String(err)),
  )
  t.is(after, 'fetch failed', 'and nothing listens on its port')
})
