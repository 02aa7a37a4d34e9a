import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import test from 'brittle'
import { LlamaCppBackend } from '../../facilities/backends/llamacpp/llamacpp.backend.js'
import { OllamaCompatServer } from '../../facilities/http/ollama-api.js'
import { TINY_MODEL_NAME, writeTinyModel } from '../../facilities/tiny-model/tiny-model.js'
import type { MeshClient } from '../../workers/client/client.worker.js'
import { rejectsWith } from '../helpers/assert.js'
import { apiKeyFor, spawnProcessor, startClient, startGateway, testnet, until } from '../helpers/mesh.js'

const STEP2_MODEL = `${TINY_MODEL_NAME}-step2`
/** Greedy continuations of "abc" by the tiny model with step 1 and step 2. */
const STEP1_TEXT = 'defghijklmnopqrstuvwxyz'
const STEP2_TEXT = 'egikmoqsuwy'

async function collect(client: MeshClient, model: string, content: string) {
  const stream = client.chat({
    model,
    messages: [{ role: 'user', content }],
    options: { temperature: 0 },
    stream: true,
  })
  const pieces: string[] = []
  let result = null
  for await (const part of stream) {
    if (part.done) result = part.result
    else pieces.push(part.text)
  }
  return { pieces, text: pieces.join(''), result }
}

test('mesh: gateway + llama.cpp and ollama processors + client, end to end', {
  timeout: 180_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)

  // Processor 1: llama.cpp over a folder with the tiny model.
  const modelsA = await t.tmp()
  await writeTinyModel(join(modelsA, `${TINY_MODEL_NAME}.gguf`))

  // Processor 2: the ollama backend, against an Ollama-protocol server backed by llama.cpp.
  const modelsB = await t.tmp()
  await mkdir(modelsB, { recursive: true })
  await writeTinyModel(join(modelsB, `${STEP2_MODEL}.gguf`), { step: 2 })
  const engine = new LlamaCppBackend({ modelsDir: modelsB, threads: 1 })
  await engine.open()
  t.teardown(() => engine.close(), { order: 2 })
  const ollama = new OllamaCompatServer({ source: engine })
  await ollama.listen()
  t.teardown(() => ollama.close(), { order: 1 })

  const gateway = await startGateway(t, bootstrap)
  const [llama, viaOllama] = await Promise.all([
    spawnProcessor(t, bootstrap, ['--store', await t.tmp(), '--models', modelsA, '--backend', 'llamacpp']),
    spawnProcessor(t, bootstrap, [
      '--store',
      await t.tmp(),
      '--backend',
      'ollama',
      '--ollama-host',
      ollama.url,
    ]),
  ])
  t.ok(llama.backend.startsWith('llamacpp'), llama.backend)
  t.ok(viaOllama.backend.startsWith('ollama'), viaOllama.backend)

  const client = await startClient(t, bootstrap, {}, { apiKey: await apiKeyFor(gateway) })
  t.ok(
    await until(async () => (await client.status()).processors.length === 2),
    'status shows both processors',
  )
  const status = await client.status()
  t.alike(status.processors.map((p) => p.publicKey).sort(), [llama.publicKey, viaOllama.publicKey].sort())
  t.alike(status.processors.find((p) => p.publicKey === llama.publicKey)?.models, [TINY_MODEL_NAME])
  t.ok(status.processors.every((p) => p.capacity >= 1))

  const models = (await client.models()).map((m) => m.name)
  t.ok(models.includes(TINY_MODEL_NAME), `models: ${models}`)
  const ollamaModel = status.processors.find((p) => p.publicKey === viaOllama.publicKey)?.models[0] ?? ''
  t.ok(ollamaModel.startsWith(STEP2_MODEL), `ollama model ${ollamaModel}`)

  const a = await collect(client, TINY_MODEL_NAME, 'abc')
  t.is(a.text, STEP1_TEXT, 'llama.cpp processor: exact greedy text')
  t.ok(a.pieces.length > 1, `streamed in ${a.pieces.length} chunks`)
  t.is(a.result?.doneReason, 'stop')
  t.is(a.result?.processor, llama.publicKey, 'served by the llama.cpp processor')
  t.is(a.result?.completionTokens, STEP1_TEXT.length, 'completion tokens counted')

  const b = await collect(client, ollamaModel, 'abc')
  t.is(b.text, STEP2_TEXT, 'ollama processor: exact greedy text')
  t.ok(b.pieces.length > 1, `streamed in ${b.pieces.length} chunks`)
  t.is(b.result?.processor, viaOllama.publicKey)

  const whole = await client.generate({ model: TINY_MODEL_NAME, prompt: 'abc', options: { temperature: 0 } })
  t.is(whole.text, STEP1_TEXT, 'non-streamed generate')

  // Kill -9 the llama.cpp processor: its model must fail clearly and quickly, not hang.
  await llama.kill()
  const killedAt = Date.now()
  let lastCode = ''
  const failedClearly = await until(
    async () => {
      const started = Date.now()
      const e = await client
        .chat({ model: TINY_MODEL_NAME, messages: [{ role: 'user', content: 'abc' }] })
        .then(
          () => null,
          (err: { code?: string }) => err,
        )
      t.ok(Date.now() - started < 12_000, 'each request answers within 12 s')
      lastCode = e?.code ?? 'ok'
      return lastCode === 'ERR_NO_PROCESSOR'
    },
    20_000,
    200,
  )
  t.ok(failedClearly, `ERR_NO_PROCESSOR after the kill (last: ${lastCode}, ${Date.now() - killedAt} ms)`)
  await rejectsWith(
    t,
    client.chat({ model: TINY_MODEL_NAME, messages: [{ role: 'user', content: 'abc' }] }),
    'ERR_NO_PROCESSOR',
  )
  t.ok(
    await until(async () => (await client.status()).processors.length === 1),
    'status drops the dead processor',
  )

  const again = await collect(client, ollamaModel, 'abc')
  t.is(again.text, STEP2_TEXT, 'the other processor still serves')
  await rejectsWith(t, client.generate({ model: 'no-such-model', prompt: 'x' }), 'ERR_MODEL_NOT_FOUND')
  t.ok(gateway.opened)
})

test('mesh: a cancelled stream stops on the processor and frees it', { timeout: 120_000 }, async (t) => {
  const { bootstrap } = await testnet(t)
  const models = await t.tmp()
  await writeTinyModel(join(models, `${TINY_MODEL_NAME}.gguf`))
  const gateway = await startGateway(t, bootstrap)
  await spawnProcessor(t, bootstrap, ['--store', await t.tmp(), '--models', models, '--parallel', '1'])
  const client = await startClient(t, bootstrap, {}, { apiKey: await apiKeyFor(gateway) })
  t.ok(await until(async () => (await client.status()).processors.length === 1))

  // A long prompt-free generation: 'a' with a big num_predict on a model that stops at 'z'
  // would end fast, so ask for raw text that keeps going: every non-letter predicts EOS,
  // hence cancel right after the first chunk.
  const stream = client.chat({
    model: TINY_MODEL_NAME,
    messages: [{ role: 'user', content: 'a' }],
    options: { temperature: 0 },
    stream: true,
  })
  let pieces = 0
  for await (const part of stream) {
    if (part.done) {
      t.ok(['cancelled', 'stop'].includes(part.result.doneReason), `ended: ${part.result.doneReason}`)
      break
    }
    pieces++
    if (pieces === 1) stream.abort()
  }
  t.ok(pieces >= 1)
  const next = await collect(client, TINY_MODEL_NAME, 'abc')
  t.is(next.text, STEP1_TEXT, 'the processor serves the next request')
  t.ok(
    await until(async () => (await client.status()).processors[0]?.active === 0),
    'no generation left running',
  )
})
