import { createHash } from 'node:crypto'
import { readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { Test } from 'brittle'
import test from 'brittle'
import {
  LlamaCppBackend,
  type LlamaCppBackendOptions,
} from '../../../../facilities/backends/llamacpp/llamacpp.backend.js'
import { TINY_MODEL_NAME, writeTinyModel } from '../../../../facilities/tiny-model/tiny-model.js'
import { rejectsWith } from '../../../helpers/assert.js'
import { streamed } from '../streamed.js'

const STEP1_TEXT = 'defghijklmnopqrstuvwxyz'
const STEP2_TEXT = 'egikmoqsuwy'
const STEP2_MODEL = `${TINY_MODEL_NAME}-step2`
const GREEDY = { temperature: 0 }

interface Setup {
  backend: LlamaCppBackend
  modelsDir: string
}

/** A models folder with the tiny model (and its step-2 twin) and an open backend closed on teardown. */
async function setup(t: Test, opts: Partial<LlamaCppBackendOptions> = {}): Promise<Setup> {
  const modelsDir = await t.tmp()
  await writeTinyModel(join(modelsDir, `${TINY_MODEL_NAME}.gguf`))
  await writeTinyModel(join(modelsDir, `${STEP2_MODEL}.gguf`), { step: 2 })
  const backend = new LlamaCppBackend({ modelsDir, threads: 1, ...opts })
  t.teardown(() => backend.close())
  await backend.open()
  return { backend, modelsDir }
}

test('llamacpp: greedy generate streams the exact continuation', async (t) => {
  const { backend } = await setup(t)
  const { result, pieces } = await streamed((onToken) =>
    backend.generate({ model: TINY_MODEL_NAME, prompt: 'abc', options: GREEDY }, { onToken }),
  )
  t.is(result.text, STEP1_TEXT)
  t.is(result.doneReason, 'stop', 'EOS ends the generation')
  t.ok(pieces.length > 1, `streamed in ${pieces.length} pieces`)
  t.is(pieces.join(''), result.text, 'the pieces are the text')
  t.is(result.completionTokens, STEP1_TEXT.length, 'one token per letter')
  t.is(result.completionTokens, pieces.length, 'completion tokens = tokens emitted')
  t.ok(result.promptTokens > 0, `prompt tokens ${result.promptTokens}`)
  for (const k of ['totalMs', 'loadMs', 'promptEvalMs', 'evalMs'] as const) {
    t.ok(Number.isFinite(result[k]) && result[k] >= 0, `${k} = ${result[k].toFixed(1)}`)
  }
  t.ok(result.totalMs >= result.evalMs + result.promptEvalMs)

  t.is(result.promptTokens, 4, 'prompt tokens: <s> a b c')
  const raw = await backend.generate({ model: TINY_MODEL_NAME, prompt: 'abc', raw: true, options: GREEDY })
  t.is(raw.text, STEP1_TEXT, 'raw completion')
  t.is(raw.promptTokens, 4, 'the whole prompt counts even when its prefix is cached')
  const withSystem = await backend.generate({
    model: `${TINY_MODEL_NAME}:latest`,
    prompt: 'abc',
    system: 'XYZ',
  })
  t.is(withSystem.text, STEP1_TEXT, 'system prompt + :latest alias + default sampling (temperature 0.8)')
})

test('llamacpp: chat answers the last user message through the chat template', async (t) => {
  const { backend } = await setup(t)
  const { result, pieces } = await streamed((onToken) =>
    backend.chat({ model: TINY_MODEL_NAME, messages: [{ role: 'user', content: 'abc' }] }, { onToken }),
  )
  t.is(result.text, STEP1_TEXT)
  t.is(result.doneReason, 'stop')
  t.ok(pieces.length > 1)
  t.is(result.completionTokens, pieces.length)

  const history = await backend.chat({
    model: TINY_MODEL_NAME,
    messages: [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'hello' },
      { role: 'assistant', content: 'HI' },
      { role: 'user', content: 'ABC' },
    ],
    options: GREEDY,
  })
  t.is(history.text, 'DEFGHIJKLMNOPQRSTUVWXYZ', 'whole history rendered, last user message answered')
  t.ok(history.promptTokens > result.promptTokens, 'the history counts as prompt')

  const step2 = await backend.chat({ model: STEP2_MODEL, messages: [{ role: 'user', content: 'abc' }] })
  t.is(step2.text, STEP2_TEXT, 'step 2 model skips letters')
})

test('llamacpp: num_predict and stop', async (t) => {
  const { backend } = await setup(t)
  const short = await backend.generate({ model: TINY_MODEL_NAME, prompt: 'abc', options: { num_predict: 5 } })
  t.is(short.text, 'defgh')
  t.is(short.doneReason, 'length')
  t.is(short.completionTokens, 5)

  const stopped = await backend.chat({
    model: TINY_MODEL_NAME,
    messages: [{ role: 'user', content: 'abc' }],
    options: { stop: ['mno'], seed: 7, top_k: 10, top_p: 0.5, repeat_penalty: 1 },
  })
  t.is(stopped.text, 'defghijkl', 'stop text is not returned')
  t.is(stopped.doneReason, 'stop')

  const digits = await backend.generate({ model: TINY_MODEL_NAME, prompt: '5', options: { num_predict: -1 } })
  t.is(digits.text, '6789')
})

test('llamacpp: the looping tiny model runs until num_predict', async (t) => {
  const { backend, modelsDir } = await setup(t)
  await writeTinyModel(join(modelsDir, 'loop.gguf'), { loop: true })
  const long = await backend.generate({ model: 'loop', prompt: 'x', options: { ...GREEDY, num_predict: 60 } })
  const alphabet = 'abcdefghijklmnopqrstuvwxyz'
  t.is(long.text, `yz${alphabet.repeat(3)}`.slice(0, 60), 'z wraps to a')
  t.is(long.doneReason, 'length')
  t.is(long.completionTokens, 60)
})

test('llamacpp: abort mid-generation returns the partial text and frees the sequence', async (t) => {
  const { backend } = await setup(t, { maxParallel: 1 })
  const controller = new AbortController()
  const pieces: string[] = []
  const partial = await backend.generate(
    { model: TINY_MODEL_NAME, prompt: 'abc', options: GREEDY },
    {
      signal: controller.signal,
      onToken: (s) => {
        pieces.push(s)
        controller.abort()
      },
    },
  )
  t.is(partial.doneReason, 'cancelled')
  t.ok(partial.text.length > 0 && STEP1_TEXT.startsWith(partial.text), `partial text '${partial.text}'`)
  t.is(partial.text, pieces.join(''))

  const next = await backend.generate({ model: TINY_MODEL_NAME, prompt: 'abc', options: GREEDY })
  t.is(next.text, STEP1_TEXT, 'the only sequence was released')

  await rejectsWith(
    t,
    backend.chat(
      { model: TINY_MODEL_NAME, messages: [{ role: 'user', content: 'abc' }] },
      { signal: controller.signal },
    ),
    'ERR_CANCELLED',
    'aborted before anything was produced',
  )
})

test('llamacpp: a request waiting for a sequence can be aborted; others queue in order', async (t) => {
  const { backend } = await setup(t, { maxParallel: 1 })
  // Warm: a loaded model is leased without disk I/O, so calls queue in call order.
  await backend.generate({ model: TINY_MODEL_NAME, prompt: 'x' })
  const waiting = new AbortController()
  const order: string[] = []
  const first = backend.generate(
    { model: TINY_MODEL_NAME, prompt: 'abc', options: GREEDY },
    { onToken: () => waiting.abort() },
  )
  const queued = backend.generate({ model: TINY_MODEL_NAME, prompt: 'ABC' }, { signal: waiting.signal })
  const later = ['a', '0', 'A'].map((prompt) =>
    backend.generate({ model: TINY_MODEL_NAME, prompt }).then((r) => {
      order.push(prompt)
      return r.text
    }),
  )
  await rejectsWith(t, queued, 'ERR_CANCELLED', 'aborted while waiting')
  t.is((await first).text, STEP1_TEXT, 'the running request is unaffected')
  t.alike(await Promise.all(later), ['bcdefghijklmnopqrstuvwxyz', '123456789', 'BCDEFGHIJKLMNOPQRSTUVWXYZ'])
  t.alike(order, ['a', '0', 'A'], 'first come, first served')
})

test('llamacpp: two concurrent requests both complete', async (t) => {
  const { backend } = await setup(t)
  const [one, two] = await Promise.all([
    backend.chat({ model: TINY_MODEL_NAME, messages: [{ role: 'user', content: 'abc' }] }),
    backend.generate({ model: TINY_MODEL_NAME, prompt: 'ABC', options: GREEDY }),
  ])
  t.is(one.text, STEP1_TEXT)
  t.is(two.text, 'DEFGHIJKLMNOPQRSTUVWXYZ')
  const running = await backend.runningModels()
  t.is(running.length, 1, 'both shared one loaded model')
})

test('llamacpp: unknown model and bad input are coded errors', async (t) => {
  const { backend } = await setup(t)
  const user = [{ role: 'user', content: 'abc' }] as const
  await rejectsWith(t, backend.generate({ model: 'no-such-model', prompt: 'abc' }), 'ERR_MODEL_NOT_FOUND')
  await rejectsWith(t, backend.chat({ model: 'no-such-model', messages: [...user] }), 'ERR_MODEL_NOT_FOUND')
  await rejectsWith(t, backend.embed({ model: 'no-such-model', input: ['x'] }), 'ERR_MODEL_NOT_FOUND')
  await rejectsWith(t, backend.showModel('no-such-model'), 'ERR_MODEL_NOT_FOUND')
  await rejectsWith(t, backend.showModel('../etc/passwd'), 'ERR_MODEL_NOT_FOUND', 'no path tricks')

  // Wire input comes from JSON: cast what the types would not allow.
  const chat = (body: unknown) => backend.chat(body as Parameters<LlamaCppBackend['chat']>[0])
  const generate = (body: unknown) => backend.generate(body as Parameters<LlamaCppBackend['generate']>[0])
  const bad: Array<[string, Promise<unknown>]> = [
    ['empty messages', chat({ model: TINY_MODEL_NAME, messages: [] })],
    ['no messages', chat({ model: TINY_MODEL_NAME })],
    ['wrong role', chat({ model: TINY_MODEL_NAME, messages: [{ role: 'robot', content: 'abc' }] })],
    ['non-string content', chat({ model: TINY_MODEL_NAME, messages: [{ role: 'user', content: 42 }] })],
    ['null message', chat({ model: TINY_MODEL_NAME, messages: [null] })],
    [
      'num_predict not a number',
      chat({ model: TINY_MODEL_NAME, messages: user, options: { num_predict: 'x' } }),
    ],
    ['negative temperature', generate({ model: TINY_MODEL_NAME, prompt: 'a', options: { temperature: -1 } })],
    ['stop not an array', generate({ model: TINY_MODEL_NAME, prompt: 'a', options: { stop: 'x' } })],
    ['options not an object', generate({ model: TINY_MODEL_NAME, prompt: 'a', options: 5 })],
    ['no prompt', generate({ model: TINY_MODEL_NAME })],
    ['empty model', generate({ model: '', prompt: 'a' })],
    ['model not a string', generate({ model: 1, prompt: 'a' })],
    ['not an object', generate(null)],
    [
      'embed input not an array',
      backend.embed({ model: TINY_MODEL_NAME, input: 'x' as unknown as string[] }),
    ],
    ['embed empty string', backend.embed({ model: TINY_MODEL_NAME, input: [''] })],
  ]
  for (const [what, p] of bad) await rejectsWith(t, p, 'ERR_BAD_REQUEST', what)

  const ok = await backend.chat({ model: TINY_MODEL_NAME, messages: [...user] })
  t.is(ok.text, STEP1_TEXT, 'still serving after bad input')
})

test('llamacpp: embed returns one n_embd vector per input', async (t) => {
  const { backend } = await setup(t)
  const res = await backend.embed({ model: TINY_MODEL_NAME, input: ['abc', 'hello world', 'abc'] })
  t.is(res.embeddings.length, 3)
  t.ok(
    res.embeddings.every((v) => v.length === 128),
    'vector length = n_embd',
  )
  t.ok(res.promptTokens >= 'abc'.length * 2 + 'hello world'.length, `prompt tokens ${res.promptTokens}`)
  const norm = Math.sqrt(res.embeddings[0].reduce((a, x) => a + x * x, 0))
  t.ok(Math.abs(norm - 1) < 1e-6, 'normalised')
  t.alike(res.embeddings[0], res.embeddings[2], 'same text, same vector')
  t.unlike(res.embeddings[0], res.embeddings[1])
  t.alike((await backend.embed({ model: TINY_MODEL_NAME, input: [] })).embeddings, [])
})

test('llamacpp: listModels, showModel and runningModels', async (t) => {
  const { backend, modelsDir } = await setup(t, { keepAliveMs: 300 })
  const path = join(modelsDir, `${TINY_MODEL_NAME}.gguf`)
  const models = await backend.listModels()
  t.alike(
    models.map((m) => m.name),
    [TINY_MODEL_NAME, STEP2_MODEL],
  )
  const tiny = models[0]
  t.is(tiny.size, (await stat(path)).size)
  t.is(
    tiny.digest,
    createHash('sha256')
      .update(await readFile(path))
      .digest('hex'),
    'digest = sha256 of the file',
  )
  t.not(tiny.digest, models[1].digest)
  t.ok(!Number.isNaN(Date.parse(tiny.modifiedAt)))
  t.alike(tiny.details, {
    format: 'gguf',
    family: 'llama',
    families: ['llama'],
    parameterSize: '0.9M',
    quantizationLevel: 'F32',
  })

  await writeTinyModel(join(modelsDir, 'late-arrival.gguf'))
  t.ok(
    (await backend.listModels()).some((m) => m.name === 'late-arrival'),
    'new files show up without a restart',
  )

  const shown = await backend.showModel(`${TINY_MODEL_NAME}:latest`)
  t.is(shown.name, TINY_MODEL_NAME)
  t.ok(shown.template.includes("m['content']"), 'chat template from the GGUF')
  t.ok(/^num_ctx\s+2048$/m.test(shown.parameters), 'Ollama-style parameters')
  t.is(shown.modelInfo['general.architecture'], 'llama')
  t.is(shown.modelInfo['llama.context_length'], 2048)
  t.is(shown.modelInfo['llama.embedding_length'], 128)
  t.alike(shown.capabilities, ['completion', 'tools', 'embedding'])

  t.alike(await backend.runningModels(), [], 'nothing loaded before the first request')
  await backend.generate({ model: TINY_MODEL_NAME, prompt: 'abc' })
  const running = await backend.runningModels()
  t.is(running.length, 1)
  t.is(running[0]?.name, TINY_MODEL_NAME)
  t.is(running[0]?.digest, tiny.digest)
  t.ok(Date.parse(running[0]?.expiresAt ?? '') > Date.now(), 'expires in the future')
  t.is(running[0]?.sizeVram, 0, 'CPU only')

  await new Promise((resolve) => setTimeout(resolve, 600))
  t.alike(await backend.runningModels(), [], 'unloaded after keepAliveMs idle')
  const again = await backend.generate({ model: TINY_MODEL_NAME, prompt: 'abc', options: GREEDY })
  t.is(again.text, STEP1_TEXT, 'reloads on demand')
})

test('llamacpp: close stops in-flight work, is idempotent, and later requests fail clearly', async (t) => {
  const { backend } = await setup(t, { maxParallel: 1 })
  t.ok(backend.describe().startsWith('llamacpp'), backend.describe())
  await backend.generate({ model: TINY_MODEL_NAME, prompt: 'x' })
  let closing: Promise<void> | null = null
  const running = backend.generate(
    { model: TINY_MODEL_NAME, prompt: 'abc', options: GREEDY },
    {
      onToken: () => {
        closing ??= backend.close()
      },
    },
  )
  const queued = backend.generate({ model: TINY_MODEL_NAME, prompt: 'abc' })
  const partial = await running
  t.is(partial.doneReason, 'cancelled', `running request stopped after '${partial.text}'`)
  await rejectsWith(t, queued, 'ERR_BACKEND_UNAVAILABLE', 'queued request fails')
  await closing
  await backend.close()
  await rejectsWith(t, backend.generate({ model: TINY_MODEL_NAME, prompt: 'abc' }), 'ERR_BACKEND_UNAVAILABLE')
  t.alike(await backend.runningModels(), [])
})

test('llamacpp: a prompt far longer than the context does not block the event loop', async (t) => {
  const { backend } = await setup(t)
  await backend.generate({ model: TINY_MODEL_NAME, prompt: 'abc', options: { num_predict: 1 } })
  // The longest gap between timer ticks while two ~1 MiB prompts run: status answers and every
  // other request on a processor wait that long. Tokenizing them whole took ~15 s here.
  let last = performance.now()
  let longest = 0
  const ticker = setInterval(() => {
    const now = performance.now()
    longest = Math.max(longest, now - last)
    last = now
  }, 10)
  const prompt = 'abcdefghij '.repeat(95_000)
  const results = await Promise.all(
    [0, 1].map(() => backend.generate({ model: TINY_MODEL_NAME, prompt, options: { num_predict: 1 } })),
  )
  clearInterval(ticker)
  t.ok(longest < 1_000, `the event loop never stalled for 1 s (longest gap ${Math.round(longest)} ms)`)
  t.ok(
    results.every((r) => r.promptTokens > 0 && r.promptTokens <= 2048),
    `counted as what reached the context (${results.map((r) => r.promptTokens).join(', ')} tokens)`,
  )
  const long = 'abcdefghij '.repeat(10_000)
  await rejectsWith(
    t,
    backend.embed({ model: TINY_MODEL_NAME, input: [long], truncate: false }),
    'ERR_BAD_REQUEST',
    'an embedding input surely longer than the context, with truncate: false',
  )
  const cut = await backend.embed({ model: TINY_MODEL_NAME, input: [long] })
  t.is(cut.embeddings.length, 1, 'and cut to the context by default')
})
