/**
 * Placement that follows demand, on two llama.cpp processors both holding a model (one request
 * at a time each, generations throttled): with the model loaded on the first and that one free,
 * no request goes to the cold second; under sustained queueing the gateway loads the model on
 * the second, requests spread over both, and once the load goes away the second unloads it
 * after the short keep-alive (2 s) placement gave it, and the gateway's view follows.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import test, { type Test } from 'brittle'
import { writeTinyModel } from '../../facilities/tiny-model/tiny-model.js'
import type { GatewayWorker } from '../../workers/gateway/gateway.worker.js'
import { apiKeyFor, spawnProcessor, startClient, startGateway, testnet, until } from '../helpers/mesh.js'

/** A model that never stops by itself: every answer is `num_predict` tokens, at the throttle's pace. */
const MODEL = 'looper'
const ASK = { model: MODEL, prompt: 'a', options: { temperature: 0, num_predict: 6 } }

async function processor(t: Test, bootstrap: string[]) {
  const dir = await t.tmp()
  await writeTinyModel(join(dir, `${MODEL}.gguf`), { loop: true })
  const file = join(await t.tmp(), 'processor.json')
  // 6 tokens at 30/s: ~200 ms an answer, one at a time.
  const backend = { type: 'llamacpp', maxParallel: 1, throttle: { tokensPerSecond: 30 } }
  await writeFile(file, JSON.stringify({ backend }))
  return spawnProcessor(t, bootstrap, ['--config', file, '--store', await t.tmp(), '--models', dir])
}

interface Listed {
  name?: string
  id?: string
  held?: number
  loaded?: number
}

const loadedOn = (gateway: GatewayWorker, key: string) =>
  gateway.router
    .entriesFor(MODEL)
    .find((e) => e.id === key)
    ?.loaded?.has(MODEL) === true

test('placement: loaded processors first; sustained queueing loads the model on a cold holder; idle, it unloads', {
  timeout: 60_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, {
    // A cold start counted at 60 s: routing never prefers one here; placement has to act.
    routing: { coldLoadMs: 60_000 },
    http: { enabled: true, port: 0 },
    placement: {
      enabled: true,
      queueWaitMs: 150,
      windowMs: 600,
      cooldownMs: 1_000,
      keepAliveMs: 2_000,
      intervalMs: 100,
    },
  })
  const apiKey = await apiKeyFor(gateway, 'root', 'admin')
  const admin = await startClient(t, bootstrap, {}, { apiKey })
  const get = async (path: string) => {
    const res = await fetch(`${gateway.httpUrl}${path}`, { headers: { Authorization: `Bearer ${apiKey}` } })
    return (await res.json()) as { models?: Listed[]; data?: Listed[] }
  }
  const [a, b] = await Promise.all([processor(t, bootstrap), processor(t, bootstrap)])
  t.ok(await until(() => gateway.router.entriesFor(MODEL).length === 2), 'both processors serve it')
  const load = await admin.modelOp('load', MODEL, { processors: [a.publicKey], keepAliveMs: 600_000 })
  t.ok(load.results[0]?.ok, 'loaded on the first by an admin')
  t.ok(await until(() => loadedOn(gateway, a.publicKey), 5_000), "the first's status says it is loaded")
  t.absent(loadedOn(gateway, b.publicKey), 'the second holds it cold')

  // One request at a time: the loaded processor always has a free slot.
  for (let i = 0; i < 5; i++) {
    const r = await admin.generate(ASK)
    t.is(r.processor, a.publicKey, `request ${i + 1}: the loaded processor, never the cold one`)
  }
  t.absent(loadedOn(gateway, b.publicKey), 'the second is still cold')

  // Sustained queueing: 4 callers for one slot, until the second serves some or 15 s pass.
  const served = new Map<string, number>()
  let servedByB = 0
  let loadedAt = 0
  const deadline = Date.now() + 15_000
  const caller = async () => {
    while (Date.now() < deadline && servedByB < 4) {
      const r = await admin.generate(ASK)
      const by = r.processor ?? ''
      served.set(by, (served.get(by) ?? 0) + 1)
      if (r.processor === b.publicKey) servedByB++
      if (!loadedAt && loadedOn(gateway, b.publicKey)) loadedAt = Date.now()
    }
  }
  const started = Date.now()
  await Promise.all([caller(), caller(), caller(), caller()])
  t.comment(
    `served: first ${served.get(a.publicKey) ?? 0}, second ${servedByB}; loaded after ${loadedAt - started} ms`,
  )
  t.ok(loadedAt > 0, 'the gateway loaded the model on the second')
  t.ok(servedByB >= 4, 'and requests spread to it')
  t.ok((served.get(a.publicKey) ?? 0) > 0, 'the first kept serving')
  // The gateway's model lists count holders and loaded copies.
  const ps = (await get('/api/ps')).models?.filter((m) => m.name === MODEL) ?? []
  t.is(ps.length, 1, '/api/ps: one entry for the model across the mesh')
  t.is(ps[0]?.loaded, 2, '/api/ps: loaded on both')
  const tags = (await get('/api/tags')).models?.find((m) => m.name === MODEL)
  t.alike([tags?.held, tags?.loaded], [2, 2], '/api/tags: held by 2, loaded on 2')
  const listed = (await get('/v1/models')).data?.find((m) => m.id === MODEL)
  t.alike([listed?.held, listed?.loaded], [2, 2], '/v1/models: the same counts')
  const counted = await gateway.metricsRegister.getSingleMetricAsString('llm_mesh_gateway_placements_total')
  t.ok(/action="load",outcome="ok"} 1\b/.test(counted), 'one placement load, counted')

  // The load is gone: the second unloads it after placement's 2 s keep-alive; the first keeps it.
  t.ok(await until(() => !loadedOn(gateway, b.publicKey), 10_000), 'unloaded on the second once idle')
  t.ok(loadedOn(gateway, a.publicKey), 'still loaded on the first (its own keep-alive)')
})
