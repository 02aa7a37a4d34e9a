/**
 * The Ollama backend's model admin (delete, copy, load) through the project's Ollama-protocol
 * server over a real engine (llama.cpp with the tiny model): /api/delete and /api/copy with
 * Ollama's shapes (200 with an empty body; 404 with {error} for a missing model).
 */
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import test from 'brittle'
import { LlamaCppBackend } from '../../../../facilities/backends/llamacpp/llamacpp.backend.js'
import { OllamaBackend } from '../../../../facilities/backends/ollama/ollama.backend.js'
import { OllamaCompatServer } from '../../../../facilities/http/ollama-api.js'
import { TINY_MODEL_NAME, writeTinyModel } from '../../../../facilities/tiny-model/tiny-model.js'
import { rejectsWith } from '../../../helpers/assert.js'

const GREEDY = { temperature: 0, num_predict: 5 }

test('ollama backend: copy, load, delete through /api/copy, /api/generate, /api/delete', async (t) => {
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

  // Copy: an alias, the same file's content, the same greedy answer.
  await ollama.copyModel(TINY_MODEL_NAME, 'alias')
  t.alike(
    (await readdir(modelsDir)).sort(),
    ['alias.gguf', `${TINY_MODEL_NAME}.gguf`],
    'ALIAS.gguf in the folder',
  )
  const listed = await ollama.listModels()
  const digests = new Set(listed.map((m) => m.digest))
  t.alike(listed.map((m) => m.name).sort(), ['alias', TINY_MODEL_NAME], 'both listed')
  t.is(digests.size, 1, 'one content, one digest')
  const a = await ollama.generate({ model: 'alias', prompt: 'abc', options: GREEDY })
  const b = await ollama.generate({ model: TINY_MODEL_NAME, prompt: 'abc', options: GREEDY })
  t.is(a.text, b.text, `same greedy text: '${a.text}'`)
  await rejectsWith(
    t,
    ollama.copyModel('nope', 'other'),
    'ERR_MODEL_NOT_FOUND',
    'copy of a missing model: 404',
  )

  // Load: an empty generate loads it (the server's engine has it loaded after).
  await engine.unloadModel('alias')
  await ollama.loadModel('alias', 60_000)
  t.ok(
    (await engine.runningModels()).some((m) => m.name === 'alias'),
    'loaded',
  )
  await rejectsWith(t, ollama.loadModel('nope'), 'ERR_MODEL_NOT_FOUND', 'load of a missing model: 404')

  // Delete: gone from the folder; a missing model is a 404.
  await engine.unloadModel('alias')
  await ollama.deleteModel('alias')
  t.alike(await readdir(modelsDir), [`${TINY_MODEL_NAME}.gguf`], 'the alias file is deleted')
  await rejectsWith(t, ollama.deleteModel('alias'), 'ERR_MODEL_NOT_FOUND', 'deleting it again: 404')
  await engine.unloadModel(TINY_MODEL_NAME)
  t.is(await ollama.unloadModel(TINY_MODEL_NAME), false, 'unload of a model not loaded: false')
  await rejectsWith(t, ollama.unloadModel('nope'), 'ERR_MODEL_NOT_FOUND', 'unload of a missing model: 404')

  // The wire: Ollama's shapes.
  const del = await fetch(`${server.url}/api/delete`, {
    method: 'DELETE',
    body: JSON.stringify({ model: 'nope' }),
  })
  t.is(del.status, 404)
  t.ok(typeof ((await del.json()) as { error?: unknown }).error === 'string', '{error}')
  const cp = await fetch(`${server.url}/api/copy`, {
    method: 'POST',
    body: JSON.stringify({ source: TINY_MODEL_NAME, destination: 'second' }),
  })
  t.is(cp.status, 200)
  t.is(await cp.text(), '', 'an empty body')
  const rm = await fetch(`${server.url}/api/delete`, {
    method: 'DELETE',
    body: JSON.stringify({ name: 'second' }),
  })
  t.is(rm.status, 200, "the pre-0.2 'name' field works too")
  t.is(await rm.text(), '')
  const wrong = await fetch(`${server.url}/api/delete`, { method: 'POST', body: '{}' })
  t.is(wrong.status, 405)
  t.is(wrong.headers.get('allow'), 'DELETE')
  const bad = await fetch(`${server.url}/api/copy`, { method: 'POST', body: JSON.stringify({ source: 'x' }) })
  t.is(bad.status, 400, 'copy without a destination: 400')
})
