import test from 'brittle'
import type { Backend } from '../../../facilities/backends/types.js'
import type { RunningModel } from '../../../kernel/wire.js'
import { LOADED_CACHE_MS, LoadStatus } from '../../../workers/processor/load-status.js'

/** A backend of `kind` whose running models are `running` (counted as asked). */
function fake(kind: Backend['kind'], running: () => string[]) {
  const calls = { n: 0 }
  const backend = {
    kind,
    runningModels: async () => {
      calls.n++
      return running().map((name) => ({ name }) as RunningModel)
    },
  } as unknown as Backend
  return { backend, calls }
}

test('load status: llama.cpp reports its loaded models as they are, and measured load times', async (t) => {
  let running = ['tiny']
  const { backend, calls } = fake('llamacpp', () => running)
  const status = new LoadStatus(() => backend)
  t.alike(await status.info(), { loaded: ['tiny'], loadMs: {} })
  status.measured(0.123, 'tiny')
  status.answered('tiny', 5_000)
  running = []
  t.alike(
    await status.info(),
    { loaded: [], loadMs: { tiny: 120 } },
    'a generation does not count: the load did',
  )
  t.is(calls.n, 2, 'read each time (from memory)')
})

test("load status: Ollama's /api/ps cached, :latest dropped; a cold generation's load_duration counts", async (t) => {
  let now = 0
  let running = ['llama3:latest']
  const { backend, calls } = fake('ollama', () => running)
  const status = new LoadStatus(
    () => backend,
    () => now,
  )
  t.alike((await status.info()).loaded, ['llama3'])
  running = ['llama3:latest', 'qwen:7b']
  now = LOADED_CACHE_MS - 1
  t.alike((await status.info()).loaded, ['llama3'], 'cached')
  status.answered('llama3', 2_000)
  t.alike((await status.info()).loadMs, {}, 'loaded already: its load_duration is bookkeeping')
  status.answered('qwen:7b', 20)
  t.alike((await status.info()).loadMs, {}, 'a few ms: not a load')
  status.answered('qwen:7b', 1_500)
  const info = await status.info()
  t.alike(info.loadMs, { 'qwen:7b': 1500 }, 'a cold start measured')
  t.alike(info.loaded, ['llama3', 'qwen:7b'], 'and the list read afresh')
  t.is(calls.n, 2)
})

test('load status: the echo backend reports nothing (gateways count it as always loaded)', async (t) => {
  const { backend } = fake('echo', () => [])
  t.alike(await new LoadStatus(() => backend).info(), {})
  const closed = new LoadStatus(() => {
    throw new Error('not open')
  })
  t.alike(await closed.info(), {}, 'a backend not open yet: nothing either')
})
