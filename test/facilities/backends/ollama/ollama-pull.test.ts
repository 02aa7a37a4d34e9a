/**
 * The Ollama backend's pull (Ollama's own `/api/pull`, its frames passed on) against the
 * project's Ollama-protocol server, whose `/api/pull` puts a GGUF from a loopback URL into
 * a llama.cpp backend's folder: progress frames forwarded, the model listed afterwards, a
 * 404 for a model the server's registry does not have.
 */
import test from 'brittle'
import { LlamaCppBackend } from '../../../../facilities/backends/llamacpp/llamacpp.backend.js'
import { OllamaBackend } from '../../../../facilities/backends/ollama/ollama.backend.js'
import type { PullProgress } from '../../../../facilities/backends/types.js'
import { OllamaCompatServer } from '../../../../facilities/http/ollama-api.js'
import { encodeTinyModel } from '../../../../facilities/tiny-model/tiny-model.js'
import { rejectsWith } from '../../../helpers/assert.js'
import { serveFiles } from '../../../helpers/gguf-server.js'

test('ollama backend: pull through /api/pull, frames forwarded, 404 for a missing model', async (t) => {
  const gguf = encodeTinyModel()
  const files = await serveFiles(t, { 'tiny.gguf': gguf })
  const engine = new LlamaCppBackend({ modelsDir: await t.tmp(), threads: 1 })
  t.teardown(() => engine.close())
  await engine.open()
  const registry: Record<string, string> = { tiny: files.url('tiny.gguf') }
  const server = new OllamaCompatServer({ source: engine, pullRegistry: (m) => registry[m] })
  await server.listen()
  t.teardown(() => server.close())
  const ollama = new OllamaBackend({ host: server.url })
  t.teardown(() => ollama.close())
  await ollama.open()

  const frames: PullProgress[] = []
  t.alike(await ollama.pullModel({ model: 'tiny' }, { onProgress: (p) => frames.push(p) }), { model: 'tiny' })
  t.ok(
    frames.some((f) => f.status === 'pulling tiny' && f.total === gguf.length && f.completed === gguf.length),
    'byte progress frames, as the server sent them',
  )
  t.ok(
    frames.some((f) => f.status === 'verifying sha256 digest'),
    'the verifying frame',
  )
  t.alike(frames.at(-1), { status: 'success' }, 'then success')
  t.alike(
    (await ollama.listModels()).map((m) => m.name),
    ['tiny'],
    'listed through Ollama',
  )

  await rejectsWith(t, ollama.pullModel({ model: 'nothere' }), 'ERR_MODEL_NOT_FOUND')
  await rejectsWith(t, ollama.pullModel({ model: 'tiny', source: files.url('tiny.gguf') }), 'ERR_UNSUPPORTED')
  const stop = new AbortController()
  stop.abort()
  await rejectsWith(t, ollama.pullModel({ model: 'tiny' }, { signal: stop.signal }), 'ERR_CANCELLED')

  const res = await fetch(`${server.url}/api/pull`, {
    method: 'POST',
    body: JSON.stringify({ model: 'nothere' }),
  })
  t.is(res.status, 404, "Ollama's 404")
  t.alike(await res.json(), { error: 'pull model manifest: file does not exist' })
  const once = await fetch(`${server.url}/api/pull`, {
    method: 'POST',
    body: JSON.stringify({ model: 'tiny', stream: false }),
  })
  t.alike(await once.json(), { status: 'success' }, 'stream: false')
})
