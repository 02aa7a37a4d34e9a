import { createServer } from 'node:http'
import { join } from 'node:path'
import type { Test } from 'brittle'
import test from 'brittle'
import { LlamaCppBackend } from '../../../../facilities/backends/llamacpp/llamacpp.backend.js'
import { probeOllama } from '../../../../facilities/backends/ollama/client.js'
import { OllamaBackend } from '../../../../facilities/backends/ollama/ollama.backend.js'
import { OllamaCompatServer } from '../../../../facilities/http/ollama-api.js'
import { TINY_MODEL_NAME, writeTinyModel } from '../../../../facilities/tiny-model/tiny-model.js'
import { rejectsWith } from '../../../helpers/assert.js'
import { closedPort } from '../../../helpers/mesh.js'
import { streamed } from '../streamed.js'

const STEP1_TEXT = 'defghijklmnopqrstuvwxyz'
const GREEDY = { temperature: 0 }
/** A refused connection fails at once; this only bounds a broken test. */
const QUICK_MS = 2000

interface Setup {
  ollama: OllamaBackend
  engine: LlamaCppBackend
  url: string
}

/**
 * A real engine (llama.cpp over the tiny model) behind the Ollama-compatible
 * server, and the ollama backend pointed at it; all closed on teardown.
 */
async function setup(t: Test): Promise<Setup> {
  const modelsDir = await t.tmp()
  await writeTinyModel(join(modelsDir, `${TINY_MODEL_NAME}.gguf`))
  const engine = new LlamaCppBackend({ modelsDir, threads: 1 })
  t.teardown(() => engine.close(), { order: 3 })
  await engine.open()
  const server = new OllamaCompatServer({ source: engine, host: '127.0.0.1', port: 0 })
  t.teardown(() => server.close(), { order: 2 })
  await server.listen()
  const ollama = new OllamaBackend({ host: server.url })
  t.teardown(() => ollama.close(), { order: 1 })
  await ollama.open()
  return { ollama, engine, url: server.url }
}

test('ollama backend: models, show and ps through the Ollama API', async (t) => {
  const { ollama, url } = await setup(t)
  t.ok(ollama.describe().startsWith(`ollama: ${url}`), ollama.describe())
  t.is(ollama.kind, 'ollama')

  const models = await ollama.listModels()
  const tiny = models.find((m) => m.name === TINY_MODEL_NAME)
  t.ok(tiny, `listModels: ${models.map((m) => m.name).join(', ')}`)
  t.ok(/^[0-9a-f]{64}$/.test(tiny?.digest ?? ''), 'digest')
  t.ok((tiny?.size ?? 0) > 0, 'size')
  t.ok(!Number.isNaN(Date.parse(tiny?.modifiedAt ?? '')), 'modifiedAt')
  t.alike(tiny?.details, {
    format: 'gguf',
    family: 'llama',
    families: ['llama'],
    parameterSize: '0.9M',
    quantizationLevel: 'F32',
  })

  const shown = await ollama.showModel(TINY_MODEL_NAME)
  t.is(shown.name, TINY_MODEL_NAME)
  t.is(shown.digest, tiny?.digest, 'size and digest come from the listing')
  t.is(shown.size, tiny?.size)
  t.ok(shown.template.includes("m['content']"), 'template')
  t.ok(/^num_ctx\s+2048$/m.test(shown.parameters), 'parameters')
  t.is(shown.modelInfo['general.architecture'], 'llama')
  t.ok(shown.capabilities.includes('completion'))

  t.alike(await ollama.runningModels(), [], 'nothing loaded yet')
  await ollama.generate({ model: TINY_MODEL_NAME, prompt: '' })
  const running = await ollama.runningModels()
  t.is(running.length, 1, 'an empty prompt loads the model')
  t.is(running[0]?.name, TINY_MODEL_NAME)
  t.ok(Date.parse(running[0]?.expiresAt ?? '') > Date.now(), 'expiresAt')
  t.is(running[0]?.sizeVram, 0)
})

test('ollama backend: chat and generate stream the exact text with counts', async (t) => {
  const { ollama } = await setup(t)

  const chat = await streamed((onToken) =>
    ollama.chat(
      { model: TINY_MODEL_NAME, messages: [{ role: 'user', content: 'abc' }], options: GREEDY },
      { onToken },
    ),
  )
  t.is(chat.result.text, STEP1_TEXT)
  t.ok(chat.pieces.length > 1, `chat streamed in ${chat.pieces.length} pieces`)
  t.is(chat.pieces.join(''), STEP1_TEXT)
  t.is(chat.result.doneReason, 'stop')
  t.is(chat.result.completionTokens, STEP1_TEXT.length)
  t.ok(chat.result.promptTokens > 0, `prompt tokens ${chat.result.promptTokens}`)
  t.ok(chat.result.totalMs > 0 && chat.result.evalMs > 0, 'durations converted to ms')
  t.ok(chat.result.totalMs < 60_000, `totalMs ${chat.result.totalMs.toFixed(1)} is milliseconds, not ns`)

  const gen = await streamed((onToken) =>
    ollama.generate({ model: TINY_MODEL_NAME, prompt: 'abc', options: GREEDY }, { onToken }),
  )
  t.is(gen.result.text, STEP1_TEXT)
  t.ok(gen.pieces.length > 1, `generate streamed in ${gen.pieces.length} pieces`)
  t.is(gen.pieces.join(''), STEP1_TEXT)
  t.ok(gen.result.completionTokens > 0 && gen.result.promptTokens > 0)

  const short = await ollama.generate({
    model: TINY_MODEL_NAME,
    prompt: 'ABC',
    system: 'XYZ',
    options: { temperature: 0, num_predict: 4 },
  })
  t.is(short.text, 'DEFG', 'system + num_predict')
  t.is(short.doneReason, 'length')
  const raw = await ollama.generate({ model: TINY_MODEL_NAME, prompt: '5', raw: true, options: GREEDY })
  t.is(raw.text, '6789', 'raw')

  const emb = await ollama.embed({ model: TINY_MODEL_NAME, input: ['abc', 'xyz'] })
  t.is(emb.embeddings.length, 2)
  t.is(emb.embeddings[0]?.length, 128)
  t.ok(emb.promptTokens > 0)
})

test('ollama backend: errors map to mesh codes', async (t) => {
  const { ollama } = await setup(t)
  const user = [{ role: 'user' as const, content: 'abc' }]
  await rejectsWith(t, ollama.chat({ model: 'nope', messages: user }), 'ERR_MODEL_NOT_FOUND', 'chat')
  await rejectsWith(t, ollama.generate({ model: 'nope', prompt: 'abc' }), 'ERR_MODEL_NOT_FOUND', 'generate')
  await rejectsWith(t, ollama.showModel('nope'), 'ERR_MODEL_NOT_FOUND', 'show')
  await rejectsWith(t, ollama.embed({ model: 'nope', input: ['x'] }), 'ERR_MODEL_NOT_FOUND', 'embed')
  await rejectsWith(
    t,
    ollama.generate({ model: TINY_MODEL_NAME, prompt: 'a', options: { temperature: -1 } }),
    'ERR_BAD_REQUEST',
    'a 400 from Ollama',
  )
  await rejectsWith(t, ollama.generate({ model: '', prompt: 'a' }), 'ERR_BAD_REQUEST', 'empty model name')
})

test('ollama backend: abort returns the partial text as cancelled', async (t) => {
  const { ollama } = await setup(t)
  const controller = new AbortController()
  const pieces: string[] = []
  const partial = await ollama.generate(
    { model: TINY_MODEL_NAME, prompt: 'abc', options: GREEDY },
    {
      signal: controller.signal,
      onToken: (s) => {
        pieces.push(s)
        if (pieces.length === 3) controller.abort()
      },
    },
  )
  t.is(partial.doneReason, 'cancelled')
  t.is(partial.text, 'def', 'exactly the pieces delivered before the abort')
  t.alike(pieces, ['d', 'e', 'f'], 'nothing delivered after the abort')

  await rejectsWith(
    t,
    ollama.chat(
      { model: TINY_MODEL_NAME, messages: [{ role: 'user', content: 'abc' }] },
      { signal: controller.signal },
    ),
    'ERR_CANCELLED',
    'aborted before anything was produced',
  )
  const next = await ollama.generate({ model: TINY_MODEL_NAME, prompt: 'abc', options: GREEDY })
  t.is(next.text, STEP1_TEXT, 'still serving')
})

test('ollama backend: close stops in-flight streams and later calls fail', async (t) => {
  const { ollama } = await setup(t)
  let closing: Promise<void> | null = null
  const partial = await ollama.generate(
    { model: TINY_MODEL_NAME, prompt: 'abc', options: GREEDY },
    {
      onToken: () => {
        closing ??= ollama.close()
      },
    },
  )
  t.is(partial.doneReason, 'cancelled', `stopped after '${partial.text}'`)
  await closing
  await ollama.close()
  await rejectsWith(t, ollama.listModels(), 'ERR_BACKEND_UNAVAILABLE', 'closed')
  await rejectsWith(t, ollama.open(), 'ERR_BACKEND_UNAVAILABLE', 'no reopening')
})

test('ollama backend: open() and probeOllama against nothing, and against a non-Ollama server', async (t) => {
  const port = await closedPort()
  const dead = new OllamaBackend({ host: `http://127.0.0.1:${port}` })
  t.teardown(() => dead.close())
  const started = Date.now()
  await rejectsWith(t, dead.open(), 'ERR_BACKEND_UNAVAILABLE', 'open() on a closed port')
  t.ok(Date.now() - started < QUICK_MS, `failed in ${Date.now() - started} ms`)
  await rejectsWith(t, dead.listModels(), 'ERR_BACKEND_UNAVAILABLE', 'requests too')
  t.is(await probeOllama(`http://127.0.0.1:${port}`), false, 'probe: closed port')
  t.is(await probeOllama('not a url at all'), false, 'probe: bad host')

  // Something else listening: answers 404 to everything.
  const other = createServer((_req, res) => {
    res.writeHead(404, { 'Content-Type': 'text/plain' })
    res.end('nope')
  })
  await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => other.close(() => resolve())))
  const addr = other.address()
  const otherUrl = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`
  t.is(await probeOllama(otherUrl), false, 'probe: not Ollama')
  await rejectsWith(
    t,
    new OllamaBackend({ host: otherUrl }).open(),
    'ERR_BACKEND_UNAVAILABLE',
    'open: not Ollama',
  )

  // A server that accepts and never answers: the probe gives up on time.
  const silent = createServer(() => {})
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    silent.closeAllConnections()
    return new Promise<void>((resolve) => silent.close(() => resolve()))
  })
  const saddr = silent.address()
  const probeStarted = Date.now()
  t.is(
    await probeOllama(`http://127.0.0.1:${typeof saddr === 'object' && saddr ? saddr.port : 0}`, 200),
    false,
  )
  t.ok(
    Date.now() - probeStarted < QUICK_MS,
    `silent server: probe gave up in ${Date.now() - probeStarted} ms`,
  )
  const stuck = new OllamaBackend({
    host: `http://127.0.0.1:${typeof saddr === 'object' && saddr ? saddr.port : 0}`,
    requestTimeoutMs: 200,
  })
  t.teardown(() => stuck.close())
  const stuckStarted = Date.now()
  const e = await rejectsWith(
    t,
    stuck.listModels(),
    'ERR_BACKEND_UNAVAILABLE',
    'no progress within requestTimeoutMs',
  )
  t.ok(Date.now() - stuckStarted < QUICK_MS, `${e?.message} after ${Date.now() - stuckStarted} ms`)

  const modelsDir = await t.tmp()
  await writeTinyModel(join(modelsDir, `${TINY_MODEL_NAME}.gguf`))
  const engine = new LlamaCppBackend({ modelsDir, threads: 1 })
  t.teardown(() => engine.close(), { order: 2 })
  const server = new OllamaCompatServer({ source: engine })
  t.teardown(() => server.close(), { order: 1 })
  await server.listen()
  t.is(await probeOllama(server.url), true, 'probe: our Ollama-compatible server')
  t.is(await probeOllama(server.url.replace('http://', '')), true, 'probe: OLLAMA_HOST form host:port')
})
