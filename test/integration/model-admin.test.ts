/**
 * Models across the mesh, an admin's changes through the gateway: load (with a keep-alive)
 * and unload, copy (an alias answering as its source), remove on one processor only (the
 * inventory and routing follow); refused to users (ERR_FORBIDDEN) and audited.
 */
import { copyFile, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import test from 'brittle'
import { TINY_MODEL_NAME, writeTinyModel } from '../../facilities/tiny-model/tiny-model.js'
import { rejectsWith } from '../helpers/assert.js'
import { apiKeyFor, spawnProcessor, startClient, startGateway, testnet, until } from '../helpers/mesh.js'

const TINY = TINY_MODEL_NAME
const GREEDY = { temperature: 0, num_predict: 6 }

test('model admin: load, unload, copy, remove on the processors named; users refused; audited', {
  timeout: 90_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, { http: { enabled: true, port: 0 } })
  const rootKey = await apiKeyFor(gateway, 'root', 'admin')
  const daveKey = await apiKeyFor(gateway, 'dave', 'user')
  const admin = await startClient(t, bootstrap, {}, { apiKey: rootKey })
  const user = await startClient(t, bootstrap, {}, { apiKey: daveKey })
  const one = await t.tmp()
  const two = await t.tmp()
  await writeTinyModel(join(one, `${TINY}.gguf`))
  await copyFile(join(one, `${TINY}.gguf`), join(two, `${TINY}.gguf`))
  await writeTinyModel(join(one, 'extra.gguf'), { step: 2 })
  const spawn = async (models: string) =>
    spawnProcessor(t, bootstrap, ['--store', await t.tmp(), '--models', models, '--backend', 'llamacpp'])
  const [a, b] = await Promise.all([spawn(one), spawn(two)])
  t.ok(await until(() => gateway.router.size === 2), 'both processors seen')
  const loadedOn = async (model: string) => {
    const m = (await admin.modelInventory()).models.find((x) => x.name === model)
    return (m?.holders ?? []).filter((h) => h.loaded).map((h) => h.processor)
  }

  // Users may not change models.
  for (const op of ['remove', 'copy', 'load', 'unload'] as const) {
    await rejectsWith(
      t,
      user.modelOp(op, TINY, { processors: [a.publicKey], destination: 'x' }),
      'ERR_FORBIDDEN',
      `a user may not ${op}`,
    )
  }

  // Load on one processor, with its own keep-alive.
  const load = await admin.modelOp('load', TINY, {
    processors: [a.publicKey.slice(0, 10)],
    keepAliveMs: 600_000,
  })
  t.alike(load.results, [{ processor: a.publicKey, ok: true }], 'loaded on the one named (by prefix)')
  t.alike(await loadedOn(TINY), [a.publicKey], 'the inventory shows it loaded there only')
  const holder = (await admin.modelInventory()).models
    .find((m) => m.name === TINY)
    ?.holders?.find((h) => h.processor === a.publicKey)
  const expires = Date.parse(holder?.expiresAt ?? '') - Date.now()
  t.ok(expires > 500_000 && expires <= 600_000, `kept 10 minutes idle (${expires} ms left)`)

  // Unload on every holder: the one that had it loaded says so.
  const unload = await admin.modelOp('unload', TINY)
  t.alike(
    unload.results.map((r) => [r.processor, r.ok, r.unloaded]).sort(),
    [
      [a.publicKey, true, true],
      [b.publicKey, true, false],
    ].sort(),
    'unloaded where it was loaded',
  )
  t.alike(await loadedOn(TINY), [], 'loaded nowhere now')

  // A copy on the second processor: an alias answering as its source.
  await rejectsWith(t, admin.modelOp('copy', TINY, {}), 'ERR_BAD_REQUEST', 'copy needs a destination')
  const cp = await admin.modelOp('copy', TINY, { processors: [b.publicKey], destination: 'alias' })
  t.alike(cp.results, [{ processor: b.publicKey, ok: true }])
  const again = await admin.modelOp('copy', TINY, { processors: [b.publicKey], destination: 'alias' })
  t.is(again.results[0]?.error?.code, 'ERR_CONFLICT', 'a copy never overwrites')
  const alias = (await admin.modelInventory()).models.find((m) => m.name === 'alias')
  const source = (await admin.modelInventory()).models.find((m) => m.name === TINY)
  t.alike(
    alias?.holders?.map((h) => h.processor),
    [b.publicKey],
    'the alias on the second only',
  )
  t.is(alias?.holders?.[0]?.digest, source?.holders?.[0]?.digest, 'the same content')
  const viaAlias = await admin.generate({ model: 'alias', prompt: 'abc', options: GREEDY })
  const viaTiny = await admin.generate({ model: TINY, prompt: 'abc', options: GREEDY })
  t.is(viaAlias.processor, b.publicKey)
  t.is(viaAlias.text, viaTiny.text, `the alias answers with the same greedy text: '${viaAlias.text}'`)

  // Remove: only where named; a remove without targets is refused.
  await rejectsWith(t, admin.modelOp('remove', TINY), 'ERR_BAD_REQUEST', 'rm names its processors')
  const rm = await admin.modelOp('remove', TINY, { processors: [a.publicKey] })
  t.alike(rm.results, [{ processor: a.publicKey, ok: true }])
  t.alike((await readdir(one)).sort(), ['extra.gguf'], 'the file is gone from the first folder')
  t.alike((await readdir(two)).sort(), ['alias.gguf', `${TINY}.gguf`], 'the second keeps its files')
  const inv = await admin.modelInventory()
  t.alike(
    inv.models.find((m) => m.name === TINY)?.holders?.map((h) => h.processor),
    [b.publicKey],
  )
  t.alike(
    gateway.router.entriesFor(TINY).map((e) => e.id),
    [b.publicKey],
    'routing knows at once: the first no longer serves it',
  )
  for (let i = 0; i < 3; i++) {
    const r = await admin.generate({ model: TINY, prompt: 'abc', options: GREEDY })
    t.is(r.processor, b.publicKey, 'served by the holder')
  }
  const gone = await admin.modelOp('remove', TINY, { processors: [a.publicKey] })
  t.is(gone.results[0]?.error?.code, 'ERR_MODEL_NOT_FOUND', 'removing it again: not found there')
  await rejectsWith(t, admin.modelOp('load', 'nowhere'), 'ERR_MODEL_NOT_FOUND', 'no holder: not found')

  // Ollama's /api/copy and /api/delete on the gateway: admins only, on every holder.
  const http = (path: string, method: string, key: string, body: unknown) =>
    fetch(`${gateway.httpUrl}${path}`, {
      method,
      headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    })
  const refused = await http('/api/delete', 'DELETE', daveKey, { model: 'alias' })
  t.is(refused.status, 403, 'a user: 403')
  t.ok(typeof ((await refused.json()) as { error?: unknown }).error === 'string', "with Ollama's {error}")
  t.is((await http('/api/copy', 'POST', daveKey, { source: 'extra', destination: 'x' })).status, 403)
  const copied = await http('/api/copy', 'POST', rootKey, { source: 'extra', destination: 'extra2' })
  t.is(copied.status, 200, 'an admin copies')
  t.is(await copied.text(), '', 'an empty body')
  t.alike((await readdir(one)).sort(), ['extra.gguf', 'extra2.gguf'])
  const deleted = await http('/api/delete', 'DELETE', rootKey, { model: 'alias' })
  t.is(deleted.status, 200, 'an admin deletes')
  t.is(await deleted.text(), '')
  t.alike((await readdir(two)).sort(), [`${TINY}.gguf`], 'gone from its holder')
  t.absent(
    (await admin.modelInventory()).models.some((m) => m.name === 'alias'),
    'and from the inventory',
  )
  const missing = await http('/api/delete', 'DELETE', rootKey, { model: 'alias' })
  t.is(missing.status, 404, 'a model nobody holds: 404')
  t.ok(typeof ((await missing.json()) as { error?: unknown }).error === 'string')

  // Audited (a failure's entry is written after its reply).
  let entries = (await admin.audit({ action: 'model' })).entries
  await until(async () => {
    entries = (await admin.audit({ action: 'model' })).entries
    return entries.length >= 18
  }, 5_000)
  t.alike(
    entries.map((e) => [e.action, e.target, e.outcome]),
    [
      ...['model.remove', 'model.copy', 'model.load', 'model.unload'].map((a) => [a, TINY, 'ERR_FORBIDDEN']),
      ['model.load', TINY, 'ok'],
      ['model.unload', TINY, 'ok'],
      ['model.copy', TINY, 'ERR_BAD_REQUEST'],
      ['model.copy', TINY, 'ok'],
      ['model.copy', TINY, 'ok'],
      ['model.remove', TINY, 'ERR_BAD_REQUEST'],
      ['model.remove', TINY, 'ok'],
      ['model.remove', TINY, 'ok'],
      ['model.load', 'nowhere', 'ERR_MODEL_NOT_FOUND'],
      ['model.remove', 'alias', 'ERR_FORBIDDEN'],
      ['model.copy', 'extra', 'ERR_FORBIDDEN'],
      ['model.copy', 'extra', 'ok'],
      ['model.remove', 'alias', 'ok'],
      ['model.remove', 'alias', 'ERR_MODEL_NOT_FOUND'],
    ],
    'every change, refusal and failure in the audit log',
  )
  t.alike(entries.find((e) => e.action === 'model.load' && e.outcome === 'ok')?.details, {
    keepAliveMs: 600_000,
    done: [a.publicKey],
    failed: [],
  })
})
