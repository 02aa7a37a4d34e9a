/**
 * Mesh copies that must fail, and leave nothing served: a caller's digest that is not the
 * holder's file (ERR_DIGEST_MISMATCH, before a byte moves), a manifest that names another
 * file's core (the whole file's sha256 differs: ERR_INTEGRITY), and a holder that tampers with
 * every block it sends (Hypercore drops them: ERR_INTEGRITY). Processors run in this process,
 * so the test can reach the holder's Corestore.
 */
import { createHash } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Test } from 'brittle'
import test from 'brittle'
import type { ModelManifest } from '../../facilities/models/blob-store.js'
import { TINY_MODEL_NAME, writeTinyModel } from '../../facilities/tiny-model/tiny-model.js'
import { parseConfig, processorConfigSchema } from '../../kernel/config.js'
import type { GatewayWorker } from '../../workers/gateway/gateway.worker.js'
import { ProcessorWorker } from '../../workers/processor/processor.worker.js'
import { rejectsWith } from '../helpers/assert.js'
import { post } from '../helpers/http.js'
import { apiKeyFor, startClient, startGateway, TEST_LOG, testnet, until } from '../helpers/mesh.js'
import { tamperBlocks } from '../helpers/tamper.js'

const MODEL = 'shared'
const OTHER = 'other'

async function processor(t: Test, bootstrap: string[], gateway: GatewayWorker, models: string) {
  const config = parseConfig(processorConfigSchema, {
    bootstrap,
    store: await t.tmp(),
    log: TEST_LOG,
    backend: { type: 'llamacpp', modelsDir: models },
    firewall: { trustedGateways: [gateway.publicKeyHex] },
  })
  const p = new ProcessorWorker(config)
  t.teardown(() => p.close(), { order: 1 })
  await p.ready()
  return p
}

const listed = async (dir: string) => (await readdir(dir)).filter((f) => !f.startsWith(TINY_MODEL_NAME))

test('model copy: a wrong digest, another core, tampered blocks: coded errors, nothing served; then /api/pull copies', {
  timeout: 60_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, { http: { enabled: true, port: 0 } })
  const adminKey = await apiKeyFor(gateway)
  const admin = await startClient(t, bootstrap, {}, { apiKey: adminKey })
  const holderDir = await t.tmp()
  const receiverDir = await t.tmp()
  await writeTinyModel(join(holderDir, `${MODEL}.gguf`), { step: 2 })
  await writeTinyModel(join(holderDir, `${OTHER}.gguf`), { step: 3 })
  await writeTinyModel(join(receiverDir, `${TINY_MODEL_NAME}.gguf`))
  const holder = await processor(t, bootstrap, gateway, holderDir)
  const receiver = await processor(t, bootstrap, gateway, receiverDir)
  t.ok(
    await until(() => gateway.router.live().filter((e) => e.modelsKey).length === 2),
    'the gateway sees both, with models keys',
  )
  const holderKey = gateway.router.find(holder.publicKeyHex).modelsKey as string
  const receiverKey = gateway.router.find(receiver.publicKeyHex).modelsKey as string
  t.not(holderKey, holder.publicKeyHex, "a processor's models key is not its RPC key")

  // A digest the holder's file does not have: refused before any byte moves.
  const wrong = await admin.pullModel({
    model: MODEL,
    to: [receiver.publicKeyHex],
    digest: `sha256:${'0'.repeat(64)}`,
  }).result
  const r = wrong.results[0]
  t.is(r?.ok === false && r.error.code, 'ERR_DIGEST_MISMATCH', 'a wrong digest: ERR_DIGEST_MISMATCH')
  t.alike(await listed(receiverDir), [], 'no file in the receiver folder')

  // Straight to the processors, as the gateway orders a copy.
  const toHolder = gateway.net.peer(holder.publicKey)
  const toReceiver = gateway.net.peer(receiver.publicKey)
  const shared = await toHolder.request<ModelManifest>('modelPublish', { model: MODEL })
  const other = await toHolder.request<ModelManifest>('modelPublish', { model: OTHER })
  for (const m of [shared, other]) await toHolder.request('modelShare', { key: m.key, peers: [receiverKey] })
  const fetch = (manifest: ModelManifest) =>
    toReceiver.stream(
      'modelFetch',
      { manifest, from: [holderKey], blockTimeoutMs: 1500 },
      { timeout: 20_000 },
    )

  // A file larger than the receiver's disk: refused before it dials the holder.
  const huge = 2 ** 50
  const tooBig = {
    ...shared,
    name: 'huge.gguf',
    size: huge,
    blob: { ...shared.blob, byteLength: huge, blockLength: Math.ceil(huge / shared.blockSize) },
  }
  const full = await rejectsWith(t, fetch(tooBig), 'ERR_NO_SPACE', 'no room: ERR_NO_SPACE')
  t.is(full?.details?.needed, 2 * huge, 'it names the bytes needed (file and blocks on one disk)')

  // A name the receiver holds already: its own file stays, whatever the manifest says.
  const tiny = `${TINY_MODEL_NAME}.gguf`
  const tinySha = createHash('sha256')
    .update(await readFile(join(receiverDir, tiny)))
    .digest('hex')
  await rejectsWith(
    t,
    fetch({ ...shared, name: tiny }),
    'ERR_CONFLICT',
    'held with another digest: ERR_CONFLICT',
  )
  const same = (await fetch({ ...shared, name: tiny, sha256: tinySha })) as { wireBytes?: number }
  t.is(same.wireBytes, 0, 'held with that digest: nothing fetched')

  // Another file's core and blob under this file's name and digest.
  await rejectsWith(
    t,
    fetch({ ...other, name: shared.name, sha256: shared.sha256 }),
    'ERR_INTEGRITY',
    'another core: ERR_INTEGRITY',
  )
  t.alike(await listed(receiverDir), [], 'nothing put in place')

  // A holder that flips a byte of every block it sends (hypercore 11.37's data message, as in
  // test/facilities/models/blob-store.test.ts): every block fails Hypercore's verification.
  const served = holder.shares.corestore.get({ key: Buffer.from(shared.key, 'hex') })
  await served.ready()
  t.teardown(() => served.close())
  const tampering = tamperBlocks(served)
  const err = await rejectsWith(t, fetch(shared), 'ERR_INTEGRITY', 'tampered blocks: ERR_INTEGRITY')
  t.ok(tampering.count() > 0, `the holder sent ${tampering.count()} tampered block(s)`)
  t.ok(Number(err?.details?.rejectedBlocks) > 0, `rejected: ${err?.details?.rejectedBlocks}`)
  t.alike(await listed(receiverDir), [], 'nothing put in place')
  const models = await toReceiver.request<{ models: { name: string }[] }>('models', {})
  t.alike(
    models.models.map((m) => m.name),
    [TINY_MODEL_NAME],
    'the receiver serves none of them',
  )

  // The Corestore admitted peers replicate holds model cores only, apart from the store's bees.
  const workerBee = await holder.store.bee('worker')
  const probe = holder.shares.corestore.get({ key: workerBee.core.key ?? Buffer.alloc(32) })
  await probe.ready()
  t.is(probe.length, 0, 'the worker bee (identity seed) is not in the Corestore peers replicate')
  await probe.close()

  // Ollama's /api/pull on the gateway, no source: llama.cpp processors copy it from the holder.
  const url = gateway.httpUrl as string
  const userKey = await apiKeyFor(gateway, 'carol', 'user')
  t.is((await post(`${url}/api/pull`, { model: OTHER }, userKey)).status, 403, 'users: 403')
  const res = await post(`${url}/api/pull`, { model: OTHER, replicas: 2 }, adminKey)
  t.is(res.status, 200)
  const lines = (await res.text())
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>)
  t.alike(lines.at(-1), { status: 'success' }, 'copied: success')
  t.ok(
    lines.some((l) => l.status === 'copying' && l.processor === receiver.publicKeyHex),
    'copy progress frames, tagged with the receiver',
  )
  t.alike(await listed(receiverDir), [`${OTHER}.gguf`], 'the copy is in the receiver folder')
  const met = await post(`${url}/api/pull`, { model: OTHER, replicas: 2 }, adminKey)
  t.alike(
    (await met.text())
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l)),
    [{ status: 'already on 2 processor(s)' }, { status: 'success' }],
    'replicas met: said, then success',
  )
  const audit = await admin.audit({ action: 'model.pull' })
  t.alike(
    audit.entries.map((e) => [e.target, e.outcome]),
    [
      [MODEL, 'ok'],
      [OTHER, 'ERR_FORBIDDEN'],
      [OTHER, 'ok'],
      [OTHER, 'ok'],
    ],
    'pulls and copies are audited (RPC and HTTP)',
  )
})
