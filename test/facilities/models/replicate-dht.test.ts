import { createHash, randomBytes } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Test } from 'brittle'
import test from 'brittle'
import Corestore from 'corestore'
import type { BlobCorestore } from 'hyperblobs'
import DHT from 'hyperdht'
import createTestnet from 'hyperdht/testnet.js'
import { blobCorestore, ModelBlobStore } from '../../../facilities/models/blob-store.js'
import { connectModels, serveModels } from '../../../facilities/models/replicate.js'
import { rejectsWith } from '../../helpers/assert.js'

async function processor(t: Test, bootstrap: Array<{ host: string; port: number }>, timeoutMs = 10_000) {
  const corestore: BlobCorestore = blobCorestore(new Corestore(await t.tmp()))
  const models = new ModelBlobStore({ corestore, timeoutMs })
  await models.ready()
  const keyPair = DHT.keyPair(randomBytes(32))
  // Loopback only: the testnet's nodes are the only bootstrap.
  const dht = new DHT({ bootstrap, host: '127.0.0.1', firewalled: false, keyPair })
  await dht.ready()
  t.teardown(
    async () => {
      await models.close()
      await dht.destroy()
      await corestore.close()
    },
    { order: 0 },
  )
  return { corestore, models, dht, keyPair }
}

test('model blobs over HyperDHT: a vouched processor fetches, any other is refused by the firewall', async (t) => {
  const net = await createTestnet(3, { host: '127.0.0.1' })
  t.teardown(() => net.destroy(), { order: 2 })
  const a = await processor(t, net.bootstrap)
  const b = await processor(t, net.bootstrap)
  const c = await processor(t, net.bootstrap, 2000)
  const bytes = randomBytes(2 * 1024 * 1024 + 7)
  const file = join(await t.tmp(), 'm.gguf')
  await writeFile(file, bytes)
  const manifest = await a.models.publish(file)

  // A serves models only to the processors its gateway vouched for: here B.
  const vouched = new Set([b.keyPair.publicKey.toString('hex')])
  const server = await serveModels(a.dht, a.corestore, {
    keyPair: a.keyPair,
    allow: (pk) => vouched.has(pk.toString('hex')),
  })
  t.teardown(() => server.close(), { order: -1 })

  const toB = connectModels(b.dht, b.corestore, server.publicKey, b.keyPair)
  t.teardown(() => toB.close(), { order: -2 })
  const dest = join(await t.tmp(), 'm.gguf')
  const res = await b.models.fetch(manifest, dest)
  t.alike(await readFile(dest), bytes, 'B has the same bytes')
  t.is(res.sha256, createHash('sha256').update(bytes).digest('hex'), 'and the same digest')
  t.is(res.wireBytes, bytes.length, 'all of it over the DHT connection')

  const toC = connectModels(c.dht, c.corestore, server.publicKey, c.keyPair)
  t.teardown(() => toC.close(), { order: -2 })
  await rejectsWith(
    t,
    c.models.fetch(manifest, join(await t.tmp(), 'm.gguf')),
    'ERR_TIMEOUT',
    'C gets nothing',
  )
  t.ok(server.stats.refused >= 1, `A's firewall refused C (${server.stats.refused})`)
  t.is(server.stats.accepted, 1, 'and let B through')
})
