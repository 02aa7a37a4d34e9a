/**
 * Desired state, held copies: three llama.cpp processors, the tiny model on one (one other
 * serves another model, the third none: an empty folder waiting for copies); replicas 2 →
 * the gateway copies it from that holder onto a second one (a pull with no source: the mesh's
 * peer-to-peer copy); that second holder stopped → the third gets a copy. The copies have the
 * holder's digest. Assertions name the reconciler's last copy error, so a failing copy says why.
 */
import { join } from 'node:path'
import test from 'brittle'
import { TINY_MODEL_NAME, writeTinyModel } from '../../facilities/tiny-model/tiny-model.js'
import { apiKeyFor, spawnLlamaProcessor, startClient, startGateway, testnet, until } from '../helpers/mesh.js'

const TINY = TINY_MODEL_NAME

test('desired state: replicas 2 copies the model onto a second processor, and again when it goes', {
  timeout: 60_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, { models: { reconcileMs: 500 } })
  const admin = await startClient(t, bootstrap, {}, { apiKey: await apiKeyFor(gateway, 'root', 'admin') })
  const spawn = async (model: string | null) => {
    const models = await t.tmp()
    if (model) await writeTinyModel(join(models, `${model}.gguf`), { step: model === TINY ? 1 : 2 })
    return spawnLlamaProcessor(t, bootstrap, models)
  }
  const [a, ...empty] = await Promise.all([spawn(TINY), spawn('other'), spawn(null)])
  t.ok(await until(() => gateway.router.live().length === 3), 'three processors seen')
  const holders = async () => {
    const m = (await admin.modelInventory()).models.find((x) => x.name === TINY)
    return m?.holders ?? []
  }
  const lastError = () => {
    const failing = gateway.desired.reconciler?.failing ?? []
    const last = failing.at(-1)
    return last
      ? `${last.kind} onto ${last.processor.slice(0, 8)} failed: ${last.error.code} ${last.error.message}`
      : 'none'
  }
  t.alike(
    (await holders()).map((h) => h.processor),
    [a.publicKey],
    'held by one processor at first',
  )

  const set = await admin.modelDesired(TINY, { replicas: 2 })
  t.alike(set.desired, { replicas: 2 })
  let started = Date.now()
  const copied = await until(async () => (await holders()).length === 2, 20_000, 200)
  t.ok(copied, `a second processor holds it (last copy error: ${lastError()})`)
  if (!copied) return
  t.comment(`copied ${Date.now() - started} ms after replicas 2 was asked`)
  const now = await holders()
  const second = now.find((h) => h.processor !== a.publicKey)
  t.ok(second && empty.some((p) => p.publicKey === second.processor), 'onto one of the others')
  t.is(second?.digest, now.find((h) => h.processor === a.publicKey)?.digest, "with the holder's digest")
  await until(async () => (await holders()).length > 2, 2_000, 200)
  t.is((await holders()).length, 2, 'no more copies than asked for')

  // The new holder goes: the third processor gets a copy.
  const gone = empty.find((p) => p.publicKey === second?.processor)
  const third = empty.find((p) => p.publicKey !== second?.processor)
  await gone?.stop()
  started = Date.now()
  const again = await until(
    async () => (await holders()).some((h) => h.processor === third?.publicKey),
    20_000,
    200,
  )
  t.ok(again, `the third processor holds it (last copy error: ${lastError()})`)
  t.comment(`copied again ${Date.now() - started} ms after the holder stopped`)
  t.alike(
    (await holders()).map((h) => h.processor).sort(),
    [a.publicKey, third?.publicKey].sort(),
    'held by two processors again',
  )
})
