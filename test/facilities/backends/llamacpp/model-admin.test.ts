/**
 * The llama.cpp backend's model admin over its folder: the digest is the file's sha256 (per
 * file version), delete and unload are refused while a request uses the model, a copy is a
 * hard link that never overwrites, load keeps a model for its own keep-alive. The echo
 * backend refuses all of it.
 */
import { createHash } from 'node:crypto'
import { readdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { Test } from 'brittle'
import test from 'brittle'
import { EchoBackend } from '../../../../facilities/backends/echo.backend.js'
import { LlamaCppBackend } from '../../../../facilities/backends/llamacpp/llamacpp.backend.js'
import { TINY_MODEL_NAME, writeTinyModel } from '../../../../facilities/tiny-model/tiny-model.js'
import { rejectsWith } from '../../../helpers/assert.js'
import { until } from '../../../helpers/mesh.js'

const sha256 = async (path: string) =>
  createHash('sha256')
    .update(await readFile(path))
    .digest('hex')

async function folderBackend(t: Test) {
  const dir = await t.tmp()
  await writeTinyModel(join(dir, `${TINY_MODEL_NAME}.gguf`))
  await writeTinyModel(join(dir, 'loop.gguf'), { loop: true })
  const backend = new LlamaCppBackend({ modelsDir: dir, threads: 1 })
  t.teardown(() => backend.close())
  await backend.open()
  return { dir, backend }
}

test('llamacpp model admin: digest, refusals while in use, copy, load with keep-alive', async (t) => {
  const { dir, backend } = await folderBackend(t)
  const digestOf = async (name: string) => (await backend.listModels()).find((m) => m.name === name)?.digest
  const tinyPath = join(dir, `${TINY_MODEL_NAME}.gguf`)
  t.is(await digestOf(TINY_MODEL_NAME), await sha256(tinyPath), 'the digest is the sha256 of the file')
  t.not(await digestOf('loop'), await digestOf(TINY_MODEL_NAME), 'another file, another digest')

  // A copy: a hard link, never over an existing model, never outside the folder.
  await backend.copyModel(TINY_MODEL_NAME, 'alias')
  t.is((await stat(join(dir, 'alias.gguf'))).ino, (await stat(tinyPath)).ino, 'a hard link')
  t.is(await digestOf('alias'), await digestOf(TINY_MODEL_NAME), 'the same digest')
  await rejectsWith(t, backend.copyModel(TINY_MODEL_NAME, 'loop'), 'ERR_CONFLICT', 'never overwrites')
  await rejectsWith(t, backend.copyModel(TINY_MODEL_NAME, '../x'), 'ERR_BAD_REQUEST', 'not out of the folder')
  await rejectsWith(t, backend.copyModel(TINY_MODEL_NAME, 'a/b'), 'ERR_BAD_REQUEST')
  await rejectsWith(t, backend.copyModel('nope', 'x'), 'ERR_MODEL_NOT_FOUND')

  // A file rewritten: a new version, a new digest.
  await writeTinyModel(join(dir, 'alias.gguf'), { step: 2 })
  t.is(await digestOf('alias'), await sha256(join(dir, 'alias.gguf')), 'recomputed for the new file')
  t.not(await digestOf('alias'), await digestOf(TINY_MODEL_NAME))

  // In use: neither deleted nor unloaded.
  const stop = new AbortController()
  let tokens = 0
  const running = backend
    .generate(
      { model: 'loop', prompt: 'abc', options: { temperature: 0, num_predict: 100_000 } },
      { signal: stop.signal, onToken: () => tokens++ },
    )
    .catch(() => null)
  t.ok(await until(() => tokens > 0, 10_000), 'a generation runs')
  await rejectsWith(t, backend.deleteModel('loop'), 'ERR_CONFLICT', 'no delete while in use')
  await rejectsWith(t, backend.unloadModel('loop'), 'ERR_CONFLICT', 'no unload while in use')
  stop.abort()
  await running
  t.is(await backend.unloadModel('loop'), true, 'unloaded once idle')
  t.is(await backend.unloadModel('loop'), false, 'not loaded any more')
  await backend.loadModel('loop')
  await backend.deleteModel('loop')
  t.absent((await readdir(dir)).includes('loop.gguf'), 'deleted (unloaded first)')
  t.alike(await backend.runningModels(), [], 'and not in memory')
  await rejectsWith(t, backend.deleteModel('loop'), 'ERR_MODEL_NOT_FOUND')
  await rejectsWith(t, backend.unloadModel('../x'), 'ERR_MODEL_NOT_FOUND')

  // Load: its own keep-alive.
  await backend.loadModel(TINY_MODEL_NAME, -1)
  t.is((await backend.runningModels())[0]?.expiresAt, '9999-12-31T23:59:59.999Z', 'never: until unloaded')
  await backend.loadModel(TINY_MODEL_NAME, 100)
  t.ok(await until(async () => (await backend.runningModels()).length === 0, 5_000), 'gone after 100 ms idle')
  await rejectsWith(t, backend.loadModel('nope'), 'ERR_MODEL_NOT_FOUND')
})

test('echo model admin: unsupported', async (t) => {
  const echo = new EchoBackend()
  await echo.open()
  await rejectsWith(t, echo.deleteModel('echo'), 'ERR_UNSUPPORTED')
  await rejectsWith(t, echo.copyModel('echo', 'x'), 'ERR_UNSUPPORTED')
  await rejectsWith(t, echo.loadModel('echo'), 'ERR_UNSUPPORTED')
  await rejectsWith(t, echo.unloadModel('echo'), 'ERR_UNSUPPORTED')
  await rejectsWith(t, echo.deleteModel('nope'), 'ERR_MODEL_NOT_FOUND')
})
