/**
 * What a key sees is what it may use: a key restricted to some models lists only those in
 * Ollama's /api/tags and /api/ps, OpenAI's /v1/models and RPC `models`/`ps`, and may not show
 * another; an unrestricted key sees them all.
 */
import test from 'brittle'
import { TINY_MODEL_NAME } from '../../../facilities/tiny-model/tiny-model.js'
import { rejectsWith } from '../../helpers/assert.js'
import {
  apiKeyFor,
  spawnProcessor,
  spawnTinyProcessor,
  startClient,
  startGateway,
  testnet,
  until,
} from '../../helpers/mesh.js'

async function get(url: string, key: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(url, { headers: { Authorization: `Bearer ${key}` } })
  return { status: res.status, body: (await res.json()) as Record<string, unknown> }
}

const names = (list: unknown, field: 'name' | 'id') =>
  (list as Record<string, string>[]).map((m) => m[field]).sort()

test('key models: a restricted key lists, shows and uses only its models', {
  timeout: 120_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, { http: { enabled: true, port: 0 } })
  const url = gateway.httpUrl as string
  await spawnProcessor(t, bootstrap, ['--store', await t.tmp(), '--backend', 'echo'])
  await spawnTinyProcessor(t, bootstrap)
  t.ok(await until(() => gateway.router.size === 2, 30_000), 'two processors, two models')
  const all = await apiKeyFor(gateway, 'admin')
  const user = gateway.auth?.user('admin')
  const restricted = (
    await gateway.auth?.createKey(user?.id as string, { name: 'echo only', models: ['echo:latest'] })
  )?.key as string
  const both = ['echo', TINY_MODEL_NAME].sort()

  t.alike(
    names((await get(`${url}/api/tags`, all)).body.models, 'name'),
    both,
    'unrestricted: /api/tags lists both',
  )
  t.alike(
    names((await get(`${url}/api/tags`, restricted)).body.models, 'name'),
    ['echo'],
    'restricted: only echo',
  )
  t.alike(
    names((await get(`${url}/v1/models`, restricted)).body.data, 'id'),
    ['echo'],
    '/v1/models: only echo',
  )
  t.is((await get(`${url}/v1/models/${TINY_MODEL_NAME}`, restricted)).status, 404, 'the other is not found')
  t.is((await get(`${url}/v1/models/${TINY_MODEL_NAME}`, all)).status, 200, 'found with the other key')
  // The tiny model loaded: /api/ps lists it to the unrestricted key only.
  const gen = await fetch(`${url}/api/generate`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${all}` },
    body: JSON.stringify({ model: TINY_MODEL_NAME, prompt: 'a', stream: false, options: { num_predict: 2 } }),
  })
  t.is(gen.status, 200, 'the tiny model answers')
  const psAll = names((await get(`${url}/api/ps`, all)).body.models, 'name')
  t.ok(psAll.includes(TINY_MODEL_NAME), '/api/ps: the loaded tiny model, to the unrestricted key')
  t.absent(
    names((await get(`${url}/api/ps`, restricted)).body.models, 'name').includes(TINY_MODEL_NAME),
    '/api/ps: not to the restricted one',
  )
  const show = await fetch(`${url}/api/show`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${restricted}` },
    body: JSON.stringify({ model: TINY_MODEL_NAME }),
  })
  t.is(show.status, 403, '/api/show of a model the key may not use: 403')

  const rpc = await startClient(t, bootstrap, {}, { apiKey: restricted })
  t.alike(
    (await rpc.models()).map((m) => m.name),
    ['echo'],
    'RPC models: only echo',
  )
  t.absent(
    (await rpc.call<{ models: { name: string }[] }>('ps')).models.some((m) => m.name === TINY_MODEL_NAME),
    'RPC ps: not the tiny model',
  )
  await rejectsWith(t, rpc.show(TINY_MODEL_NAME), 'ERR_FORBIDDEN', 'RPC show of another model')
  t.is((await rpc.show('echo')).name, 'echo', 'RPC show of its own model answers')
  const rpcAll = await startClient(t, bootstrap, {}, { apiKey: all })
  t.alike((await rpcAll.models()).map((m) => m.name).sort(), both, 'RPC models, unrestricted: both')
})
