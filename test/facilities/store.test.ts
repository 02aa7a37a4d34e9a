import test from 'brittle'
import { StoreFacility } from '../../facilities/store.facility.js'
import { rejectsWith } from '../helpers/assert.js'

test('store: its Hyperbees share one cache of at most cacheEntries entries', async (t) => {
  const store = new StoreFacility({ dir: await t.tmp(), cacheEntries: 64 })
  await store.ready()
  t.teardown(() => store.close())
  const a = await store.bee('a')
  const b = await store.bee('b')
  const cache = a.core.globalCache
  t.ok(cache, 'the store gave its cores a cache')
  t.is(b.core.globalCache, cache, 'every Hyperbee of the store shares it')
  // Values of a few KB, as the ledger's record groups are: each cached key pins its block.
  const value = { records: 'x'.repeat(4096) }
  const batch = a.batch()
  for (let i = 0; i < 600; i++) await batch.put(`k/${String(i).padStart(4, '0')}`, value)
  await batch.flush()
  for (let i = 0; i < 600; i += 7) await b.put(`k/${i}`, { i })
  let read = 0
  for await (const entry of a.createReadStream({ gte: 'k/', lt: 'k0' })) read += entry.value ? 1 : 0
  for (let i = 0; i < 600; i += 3) t.ok((await a.get(`k/${String(i).padStart(4, '0')}`))?.value, `k/${i}`)
  t.is(read, 600, 'every entry read back whole')
  t.ok(cache && cache.globalSize > 0, 'reads fill the cache')
  t.ok(cache && cache.globalSize <= 64, `the cache stays within its bound (${cache?.globalSize} entries)`)
})

test('store: a cache bound that is not a positive integer is refused', async (t) => {
  const dir = await t.tmp()
  for (const cacheEntries of [0, -1, 1.5, Number.NaN]) {
    await rejectsWith(
      t,
      (async () => new StoreFacility({ dir, cacheEntries }))(),
      'ERR_BAD_CONFIG',
      String(cacheEntries),
    )
  }
})
