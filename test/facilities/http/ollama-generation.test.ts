import test from 'brittle'
import { TINY_MODEL_NAME } from '../../../facilities/tiny-model/tiny-model.js'
import {
  checkMetrics,
  expectError,
  GREEDY,
  type Json,
  lines,
  post,
  STEP1_TEXT,
  setup,
} from './ollama-fixture.js'

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
