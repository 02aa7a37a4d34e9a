/**
 * Pulling a GGUF from a URL into the llama.cpp backend's folder (model-pull.ts),
 * against a loopback HTTP server: listed and answering once pulled, a wrong
 * digest refused and not served, an interrupted pull resumed.
 */
import { createHash } from 'node:crypto'
import { readdir } from 'node:fs/promises'
import test, { type Test } from 'brittle'
import { LlamaCppBackend } from '../../../../facilities/backends/llamacpp/llamacpp.backend.js'
import type { PullProgress } from '../../../../facilities/backends/types.js'
import { encodeTinyModel } from '../../../../facilities/tiny-model/tiny-model.js'
import { rejectsWith } from '../../../helpers/assert.js'
import { serveFiles } from '../../../helpers/gguf-server.js'
import { GREEDY, STEP1_TEXT } from './tiny-backend.js'

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex')

async function emptyBackend(t: Test) {
  const modelsDir = await t.tmp()
  const backend = new LlamaCppBackend({ modelsDir, threads: 1 })
  t.teardown(() => backend.close())
  await backend.open()
  return { backend, modelsDir }
}

test('pull: a GGUF from a URL is listed, answers, and progress reaches total', async (t) => {
  const gguf = encodeTinyModel()
  const server = await serveFiles(t, { 'tiny.gguf': gguf, 'junk.gguf': Buffer.alloc(4096, 7) })
  const { backend, modelsDir } = await emptyBackend(t)
  const frames: PullProgress[] = []
  const result = await backend.pullModel(
    { model: 'pulled', source: server.url('tiny.gguf'), digest: `sha256:${sha256(gguf)}` },
    { onProgress: (p) => frames.push(p) },
  )
  t.alike(result, { model: 'pulled', digest: `sha256:${sha256(gguf)}`, size: gguf.length })
  const bytes = frames.filter((f) => f.total !== undefined)
  t.ok(bytes.length > 0, 'byte progress frames')
  t.is(bytes.at(-1)?.completed, gguf.length, 'progress reaches the file size')
  t.is(bytes.at(-1)?.total, gguf.length)
  t.is(frames.at(-1)?.status, 'success')
  const listed = await backend.listModels()
  t.alike(
    listed.map((m) => [m.name, m.digest]),
    [['pulled', sha256(gguf)]],
  )
  const answer = await backend.generate({ model: 'pulled', prompt: 'abc', options: GREEDY })
  t.is(answer.text, STEP1_TEXT, 'the pulled model answers with the exact greedy text')
  t.alike(await readdir(modelsDir), ['pulled.gguf'], 'no partial file left')

  const again = await backend.pullModel({ model: 'pulled', source: server.url('tiny.gguf') })
  t.is(again.digest, `sha256:${sha256(gguf)}`, 'pulling a model that is there is a no-op')

  await rejectsWith(
    t,
    backend.pullModel({ model: 'junk', source: server.url('junk.gguf') }),
    'ERR_BAD_REQUEST',
  )
  await rejectsWith(
    t,
    backend.pullModel({ model: 'x', source: server.url('missing.gguf') }),
    'ERR_BACKEND_UNAVAILABLE',
  )
  await rejectsWith(
    t,
    backend.pullModel({ model: '../evil', source: server.url('tiny.gguf') }),
    'ERR_BAD_REQUEST',
  )
  await rejectsWith(t, backend.pullModel({ model: 'x', source: 'file:///etc/passwd' }), 'ERR_BAD_REQUEST')
  await rejectsWith(
    t,
    backend.pullModel({ model: 'x', source: server.url('tiny.gguf'), digest: 'md5:1' }),
    'ERR_BAD_REQUEST',
  )
  t.alike(
    (await backend.listModels()).map((m) => m.name),
    ['pulled'],
    'failed pulls list nothing',
  )
})

test('pull: a wrong digest is refused and the model is not served', async (t) => {
  const gguf = encodeTinyModel()
  const server = await serveFiles(t, { 'tiny.gguf': gguf })
  const { backend, modelsDir } = await emptyBackend(t)
  const wrong = `sha256:${'0'.repeat(64)}`
  await rejectsWith(
    t,
    backend.pullModel({ model: 'tampered', source: server.url('tiny.gguf'), digest: wrong }),
    'ERR_DIGEST_MISMATCH',
  )
  t.alike(await backend.listModels(), [], 'not listed')
  await rejectsWith(t, backend.generate({ model: 'tampered', prompt: 'abc' }), 'ERR_MODEL_NOT_FOUND')
  t.alike(await readdir(modelsDir), [], 'the refused download is deleted')
})

test('pull: an interrupted pull resumes and fetches less than the whole file again', async (t) => {
  // ipull fetches 5 MB chunks, three at a time, and keeps a chunk only once it is whole: padded
  // to four whole chunks and a bit, the pull is stopped once the first three are in.
  const gguf = encodeTinyModel({ name: `padded ${'x'.repeat(20 * 1024 * 1024)}` })
  const server = await serveFiles(t, { 'big.gguf': gguf }, { chunk: 256 * 1024, tickMs: 15 })
  const { backend, modelsDir } = await emptyBackend(t)
  const source = server.url('big.gguf')
  const stop = new AbortController()
  const first = backend.pullModel(
    { model: 'big', source },
    {
      signal: stop.signal,
      onProgress: (p) => {
        if ((p.completed ?? 0) > 16 * 1024 * 1024) stop.abort()
      },
    },
  )
  await rejectsWith(
    t,
    backend.pullModel({ model: 'big', source }),
    'ERR_CONFLICT',
    'one pull of a name at a time',
  )
  await rejectsWith(t, first, 'ERR_CANCELLED')
  t.alike(await backend.listModels(), [], 'a partial download is not listed')
  const before = server.bytesSent
  t.is((await readdir(modelsDir)).length, 1, 'the partial file is kept')
  t.ok(before < gguf.length, `the first pull stopped midway (${before} of ${gguf.length} bytes)`)

  const result = await backend.pullModel({ model: 'big', source, digest: sha256(gguf) })
  const second = server.bytesSent - before
  t.ok(second < gguf.length, `the second pull fetched ${second} of ${gguf.length} bytes`)
  t.is(result.digest, `sha256:${sha256(gguf)}`, 'verified')
  t.alike(
    (await backend.listModels()).map((m) => m.name),
    ['big'],
  )
})
