/**
 * Desired state, loaded copies: two llama.cpp processors hold the tiny model; an admin asks for
 * it loaded on 2 and the gateway loads it on both (their `ps` shows it); a processor restarted
 * (memory empty) has it loaded again by the reconciler. Users are refused (ERR_FORBIDDEN), bad
 * requests are coded, `model ls --json` (the real binary) shows desired vs actual, the state
 * is kept in the gateway's store, audited, and cleared with replicas 0.
 */
import { execFile } from 'node:child_process'
import { copyFile } from 'node:fs/promises'
import { join } from 'node:path'
import test from 'brittle'
import { TINY_MODEL_NAME, writeTinyModel } from '../../facilities/tiny-model/tiny-model.js'
import type { RunningModel } from '../../kernel/wire.js'
import type { DesiredRecord } from '../../workers/gateway/model-desired.js'
import type { ModelInventoryReply } from '../../workers/gateway/model-inventory.js'
import { rejectsWith } from '../helpers/assert.js'
import { apiKeyFor, BIN, spawnProcessor, startClient, startGateway, testnet, until } from '../helpers/mesh.js'

const TINY = TINY_MODEL_NAME

test('desired state: loaded on 2, reloaded after a restart; users refused; model ls shows it', {
  timeout: 90_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, { models: { reconcileMs: 500 } })
  const rootKey = await apiKeyFor(gateway, 'root', 'admin')
  const admin = await startClient(t, bootstrap, {}, { apiKey: rootKey })
  const user = await startClient(t, bootstrap, {}, { apiKey: await apiKeyFor(gateway, 'dave', 'user') })
  const [modelsA, modelsB, storeA] = [await t.tmp(), await t.tmp(), await t.tmp()]
  await writeTinyModel(join(modelsA, `${TINY}.gguf`))
  await copyFile(join(modelsA, `${TINY}.gguf`), join(modelsB, `${TINY}.gguf`))
  const args = (store: string, models: string) => [
    '--store',
    store,
    '--models',
    models,
    '--backend',
    'llamacpp',
  ]
  const spawnA = () => spawnProcessor(t, bootstrap, args(storeA, modelsA))
  const [a, b] = await Promise.all([
    spawnA(),
    (async () => spawnProcessor(t, bootstrap, args(await t.tmp(), modelsB)))(),
  ])
  t.ok(await until(() => gateway.router.live().length === 2), 'both processors seen')
  const psOf = async (key: string) =>
    (await gateway.net.peer(Buffer.from(key, 'hex')).request<{ models: RunningModel[] }>('ps', null)).models
  const loadedOn = async () => {
    const m = (await admin.modelInventory()).models.find((x) => x.name === TINY)
    return (m?.holders ?? []).filter((h) => h.loaded).map((h) => h.processor)
  }
  t.alike(await loadedOn(), [], 'loaded nowhere at first')

  // Users may not set it; bad requests are coded.
  await rejectsWith(t, user.modelDesired(TINY, { loaded: 2 }), 'ERR_FORBIDDEN', 'a user may not')
  await rejectsWith(
    t,
    admin.modelDesired(TINY, { replicas: 1, loaded: 2 }),
    'ERR_BAD_REQUEST',
    'loaded > replicas',
  )
  await rejectsWith(t, admin.modelDesired(TINY, { replicas: -1 }), 'ERR_BAD_REQUEST', 'a negative count')
  await rejectsWith(t, admin.modelDesired(TINY, { replicas: 1.5 }), 'ERR_BAD_REQUEST', 'not an integer')
  await rejectsWith(t, admin.modelDesired('', { replicas: 1 }), 'ERR_BAD_REQUEST', 'no model name')

  // Loaded on 2: the reconciler loads it on both.
  const set = await admin.modelDesired(TINY, { loaded: 2 })
  t.alike(set, { model: TINY, desired: { replicas: 2, loaded: 2 } }, 'replicas follow loaded')
  let started = Date.now()
  t.ok(await until(async () => (await loadedOn()).length === 2, 15_000), 'loaded on both')
  t.comment(`loaded on both ${Date.now() - started} ms after it was asked`)
  for (const p of [a, b]) {
    t.alike(
      (await psOf(p.publicKey)).map((m) => m.name),
      [TINY],
      `${p.publicKey.slice(0, 8)}'s ps shows it`,
    )
  }
  const stored = await (await gateway.store.bee('models')).get<DesiredRecord>(`desired/${TINY}`)
  t.alike(
    [stored?.value?.model, stored?.value?.replicas, stored?.value?.loaded],
    [TINY, 2, 2],
    'kept in the store',
  )

  // `model ls --json` through the real binary: desired against actual.
  const cli = (args: string[]) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      const via = ['--bootstrap', bootstrap.join(','), '--api-key', rootKey]
      execFile(process.execPath, [BIN, ...args, ...via], { timeout: 30_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? 1 : 0, stdout, stderr }),
      )
    })
  const ls = await cli(['model', 'ls', '--json'])
  t.is(ls.code, 0, `model ls exits 0 ${ls.stderr}`)
  const listed = (JSON.parse(ls.stdout) as ModelInventoryReply).models.find((m) => m.name === TINY)
  t.alike(
    [listed?.desired, listed?.held, listed?.loaded],
    [{ replicas: 2, loaded: 2 }, 2, 2],
    'desired {replicas 2, loaded 2}, held 2, loaded 2',
  )

  // A restarted processor has an empty memory: the reconciler loads it there again.
  await a.kill()
  t.ok(await until(async () => (await loadedOn()).length === 1, 10_000), 'one loaded while it is down')
  started = Date.now()
  const a2 = await spawnA()
  t.is(a2.publicKey, a.publicKey, 'the same processor (its store)')
  t.ok(await until(async () => (await loadedOn()).length === 2, 15_000), 'loaded on both again')
  t.comment(`reloaded ${Date.now() - started} ms after the restart began`)
  t.alike(
    (await psOf(a2.publicKey)).map((m) => m.name),
    [TINY],
    "the restarted one's ps shows it",
  )

  // Audited; cleared with replicas 0 (the real binary).
  const entries = (await admin.audit({ action: 'model.desired' })).entries
  t.alike(
    entries.filter((e) => e.outcome === 'ok').map((e) => [e.target, e.details]),
    [[TINY, { replicas: 2, loaded: 2 }]],
    'the change is audited',
  )
  const clear = await cli(['model', 'replicas', TINY, '0', '--json'])
  t.is(clear.code, 0, `model replicas exits 0 ${clear.stderr}`)
  t.alike(JSON.parse(clear.stdout), { model: TINY, desired: null }, '`model replicas NAME 0` clears it')
  const after = (await admin.modelInventory()).models.find((m) => m.name === TINY)
  t.is(after?.desired, undefined, 'model ls shows no desired state')
  t.is(
    (await (await gateway.store.bee('models')).get(`desired/${TINY}`)) ?? null,
    null,
    'gone from the store',
  )
})
