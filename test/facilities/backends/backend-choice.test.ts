/**
 * Which engine a processor opens (BackendFacility): llama.cpp chosen by name serves an empty
 * folder (a machine waiting for models: a pull or a mesh copy fills it); `auto` with no
 * Ollama and no GGUF file refuses to start with ERR_BAD_CONFIG unless the tiny-model
 * fallback is on, which writes the tiny model.
 */

import { readdir } from 'node:fs/promises'
import { createServer } from 'node:net'
import test from 'brittle'
import { BackendFacility } from '../../../facilities/backends/backend.facility.js'
import { LogFacility } from '../../../facilities/log.facility.js'
import { TINY_MODEL_NAME } from '../../../facilities/tiny-model/tiny-model.js'
import { backendConfigSchema } from '../../../kernel/config.js'
import { rejectsWith } from '../../helpers/assert.js'

const logger = new LogFacility({ level: 'silent' }).logger

/** A loopback URL where nothing answers (a port bound, then freed). */
async function deadHost(): Promise<string> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise((resolve) => server.close(resolve))
  return `http://127.0.0.1:${port}`
}

test('backend choice: llama.cpp by name opens an empty folder and serves no model', async (t) => {
  const dir = await t.tmp()
  const config = backendConfigSchema.parse({ type: 'llamacpp', modelsDir: dir })
  const facility = new BackendFacility({ config, defaultModelsDir: dir, logger })
  await facility.ready()
  t.teardown(() => facility.close())
  t.is(facility.choice?.kind, 'llamacpp')
  t.ok(facility.choice?.reason.includes('serves none until one is pulled or copied'), facility.choice?.reason)
  t.alike(await facility.backend.listModels(), [], 'no model yet')
  t.alike(await readdir(dir), [], 'nothing written')
})

test('backend choice: auto with no Ollama and no GGUF refuses (ERR_BAD_CONFIG), or writes the tiny model when allowed', async (t) => {
  const dir = await t.tmp()
  const ollamaHost = await deadHost()
  const refused = new BackendFacility({
    config: backendConfigSchema.parse({ type: 'auto', modelsDir: dir, ollamaHost }),
    defaultModelsDir: dir,
    logger,
  })
  await rejectsWith(t, refused.ready(), 'ERR_BAD_CONFIG', 'no models anywhere')
  const fallback = new BackendFacility({
    config: backendConfigSchema.parse({ type: 'auto', modelsDir: dir, ollamaHost, tinyModelFallback: true }),
    defaultModelsDir: dir,
    logger,
  })
  await fallback.ready()
  t.teardown(() => fallback.close())
  t.alike(await readdir(dir), [`${TINY_MODEL_NAME}.gguf`], 'the tiny model written')
  t.alike(
    (await fallback.backend.listModels()).map((m) => m.name),
    [TINY_MODEL_NAME],
  )
})
