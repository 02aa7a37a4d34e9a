import test from 'brittle'
import { TINY_MODEL_NAME } from '../../../facilities/tiny-model/tiny-model.js'
import { type Json, post, setup, VERSION } from './ollama-fixture.js'

test('ollama-api: root, version, tags, show and ps have Ollama shapes', async (t) => {
  const { url } = await setup(t)

  const root = await fetch(`${url}/`)
  t.is(root.status, 200)
  t.is(await root.text(), 'Ollama is running')
  const head = await fetch(`${url}/`, { method: 'HEAD' })
  t.is(head.status, 200, 'HEAD /')

  const version = await fetch(`${url}/api/version`)
  t.alike(await version.json(), { version: VERSION })

  const tags = (await (await fetch(`${url}/api/tags`)).json()) as { models: Json[] }
  t.is(tags.models.length, 1)
  const tiny = tags.models[0] as Json
  t.is(tiny.name, TINY_MODEL_NAME)
  t.is(tiny.model, TINY_MODEL_NAME)
  t.ok(typeof tiny.size === 'number' && tiny.size > 0, 'size')
  t.ok(/^[0-9a-f]{64}$/.test(String(tiny.digest)), 'sha256 digest')
  t.ok(!Number.isNaN(Date.parse(String(tiny.modified_at))), 'modified_at')
  t.alike(tiny.details, {
    parent_model: '',
    format: 'gguf',
    family: 'llama',
    families: ['llama'],
    parameter_size: '0.9M',
    quantization_level: 'F32',
  })

  const shown = (await (await post(`${url}/api/show`, { model: TINY_MODEL_NAME })).json()) as Json
  for (const k of [
    'modelfile',
    'parameters',
    'template',
    'details',
    'model_info',
    'capabilities',
    'modified_at',
  ]) {
    t.ok(k in shown, `show has ${k}`)
  }
  t.ok(String(shown.modelfile).includes(`FROM ${TINY_MODEL_NAME}`), 'modelfile names the model')
  t.ok(/^PARAMETER num_ctx 2048$/m.test(String(shown.modelfile)), 'modelfile lists the parameters')
  t.ok(/^num_ctx\s+2048$/m.test(String(shown.parameters)))
  t.is((shown.model_info as Json)['general.architecture'], 'llama')
  t.ok(Array.isArray(shown.capabilities) && shown.capabilities.includes('completion'))
  t.alike(shown.details, tiny.details)
  const byName = await post(`${url}/api/show`, { name: TINY_MODEL_NAME })
  t.is(byName.status, 200, 'show accepts the legacy `name` field')
  await byName.body?.cancel()

  const idle = (await (await fetch(`${url}/api/ps`)).json()) as { models: Json[] }
  t.alike(idle.models, [], 'nothing loaded yet')
  const load = await post(`${url}/api/generate`, { model: TINY_MODEL_NAME })
  const loaded = (await load.json()) as Json
  t.is(loaded.done, true, 'empty prompt loads the model')
  t.is(loaded.done_reason, 'load')
  t.is(loaded.response, '')
  const ps = (await (await fetch(`${url}/api/ps`)).json()) as { models: Json[] }
  t.is(ps.models.length, 1)
  const running = ps.models[0] as Json
  t.is(running.name, TINY_MODEL_NAME)
  t.ok(Date.parse(String(running.expires_at)) > Date.now(), 'expires_at in the future')
  t.is(running.size_vram, 0, 'size_vram')
  t.alike(running.details, tiny.details)

  const chatLoad = (await (
    await post(`${url}/api/chat`, { model: TINY_MODEL_NAME, messages: [] })
  ).json()) as Json
  t.alike(chatLoad.message, { role: 'assistant', content: '' })
  t.is(chatLoad.done_reason, 'load', 'chat with no messages loads the model')
})
