import test from 'brittle'
import { OllamaCompatServer } from '../../../facilities/http/ollama-api.js'
import { TINY_MODEL_NAME } from '../../../facilities/tiny-model/tiny-model.js'
import { MeshError } from '../../../kernel/errors.js'
import type { InferenceSource } from '../../../kernel/wire.js'
import { rejectsWith } from '../../helpers/assert.js'
import { closedPort } from '../../helpers/mesh.js'
import { GREEDY, type Json, post, SlowSource, STEP1_TEXT, setup } from './ollama-fixture.js'

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
