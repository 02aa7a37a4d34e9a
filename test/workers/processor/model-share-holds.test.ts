/**
 * How long a processor keeps the blocks of a model it shared (workers/processor/model-share.ts):
 * a share order holds them for 30 minutes, kept in the store's bee `model-share`; a hold whose
 * time is up when the processor starts again is released at once: its blocks dropped from the
 * models Corestore and its record deleted.
 */
import { join } from 'node:path'
import test from 'brittle'
import type { ModelManifest } from '../../../facilities/models/blob-store.js'
import type { CallContext } from '../../../facilities/net/rpc-server.js'
import { StoreFacility } from '../../../facilities/store.facility.js'
import { writeTinyModel } from '../../../facilities/tiny-model/tiny-model.js'
import { parseConfig, processorConfigSchema } from '../../../kernel/config.js'
import { ProcessorWorker } from '../../../workers/processor/processor.worker.js'
import { TEST_LOG, testnet, until } from '../../helpers/mesh.js'

const ctx = {} as CallContext

test('model share: a share holds the blocks; a hold whose time is up at start drops them and its record', {
  timeout: 60_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const models = await t.tmp()
  await writeTinyModel(join(models, 'm.gguf'))
  const store = await t.tmp()
  const config = parseConfig(processorConfigSchema, {
    bootstrap,
    store,
    log: TEST_LOG,
    backend: { type: 'llamacpp', modelsDir: models },
    firewall: { trustedGateways: ['cd'.repeat(32)] },
  })
  const first = new ProcessorWorker(config)
  await first.ready()
  const methods = first.shares.methods()
  const manifest = (await methods.modelPublish?.({ model: 'm' }, ctx)) as ModelManifest
  await methods.modelShare?.({ key: manifest.key, peers: ['ab'.repeat(32)] }, ctx)
  const has = async (p: ProcessorWorker) => {
    const core = p.shares.corestore.get({ key: Buffer.from(manifest.key, 'hex') })
    await core.ready()
    const there = await core.has(manifest.blob.blockOffset)
    await core.close()
    return there
  }
  t.ok(await has(first), 'published and held')
  await first.close()

  // The hold's time is up while the processor is stopped.
  const offline = new StoreFacility({ dir: store })
  await offline.ready()
  const bee = await offline.bee('model-share')
  const held = await bee.get<{ manifest: ModelManifest; until: number }>(`hold/${manifest.key}`)
  t.ok(held && held.value.until > Date.now() + 29 * 60_000, 'kept in the store for 30 minutes')
  await bee.put(`hold/${manifest.key}`, { manifest, until: Date.now() - 1 })
  await offline.close()

  const second = new ProcessorWorker(config)
  t.teardown(() => second.close())
  await second.ready()
  t.ok(await until(async () => !(await has(second)), 10_000, 100), 'its blocks are dropped')
  const after = new StoreFacility({ dir: `${store}` })
  t.teardown(() => after.close())
  await second.close()
  await after.ready()
  t.absent(await (await after.bee('model-share')).get(`hold/${manifest.key}`), 'and its record')
})
