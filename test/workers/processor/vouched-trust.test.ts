import test from 'brittle'
import { LogFacility } from '../../../facilities/log.facility.js'
import { StoreFacility } from '../../../facilities/store.facility.js'
import {
  MAX_VOUCHED,
  parseTrust,
  VOUCH_TTL_MS,
  VouchedTrust,
} from '../../../workers/processor/vouched-trust.js'
import { rejectsWith, thrown } from '../../helpers/assert.js'
import type { T } from '../../helpers/mesh.js'

const logger = new LogFacility({ level: 'silent' }).logger
const key = (n: number) => n.toString(16).padStart(2, '0').repeat(32)
const [V1, V2, G1, G2, G3] = [1, 2, 0xa1, 0xa2, 0xa3].map(key) as [string, string, string, string, string]

async function open(t: T, dir: string | null, vouchers: string[]) {
  const store = dir ? new StoreFacility({ dir }) : null
  await store?.ready()
  const removed: string[][] = []
  const trust = new VouchedTrust({
    isVoucher: (k) => vouchers.includes(k),
    store: () => store,
    log: () => logger,
    onRemoved: (keys) => removed.push(keys),
  })
  await trust.ready()
  const close = async () => {
    await trust.close()
    await store?.close()
  }
  t.teardown(close)
  return { trust, removed, close }
}

test('vouched trust: each voucher replaces its own set; the union is served; removals are reported once nobody vouches', async (t) => {
  const { trust, removed } = await open(t, null, [V1, V2])
  await trust.set(V1, { gateways: [G1, G2.toUpperCase()] })
  t.ok(trust.has(G1) && trust.has(G2), 'both vouched for (any case)')
  t.alike(trust.of(V1), [G1, G2].sort())
  await trust.set(V2, { gateways: [G2, G3] })
  t.alike(trust.keys().sort(), [G1, G2, G3].sort())

  await trust.set(V1, { gateways: [G1] })
  t.ok(trust.has(G2), 'G2: V2 still vouches for it')
  t.alike(removed, [], 'so nothing was removed')
  await trust.set(V2, { gateways: [] })
  t.alike(
    removed.map((r) => [...r].sort()),
    [[G2, G3].sort()],
    'G2 and G3 went with V2',
  )
  t.absent(trust.has(G2))
  t.absent(trust.has(G3))
  t.ok(trust.has(G1))
  t.alike(trust.of(V2), [])
})

test('vouched trust: only configured gateways vouch (no chaining); bad sets are refused', async (t) => {
  const { trust } = await open(t, null, [V1])
  await trust.set(V1, { gateways: [G1] })
  t.is(
    thrown(() => trust.set(G1, { gateways: [G2] }))?.code,
    'ERR_FORBIDDEN',
    'a vouched-for gateway may not vouch',
  )
  t.is(thrown(() => trust.set(V2, { gateways: [G2] }))?.code, 'ERR_FORBIDDEN', 'nor a stranger')
  t.absent(trust.has(G2))
  t.is(thrown(() => parseTrust({ gateways: 'x' }))?.code, 'ERR_BAD_REQUEST')
  t.is(thrown(() => parseTrust({ gateways: ['nothex'] }))?.code, 'ERR_BAD_REQUEST')
  t.is(thrown(() => parseTrust(null))?.code, 'ERR_BAD_REQUEST')
  const many = Array.from({ length: MAX_VOUCHED + 1 }, (_, i) => i.toString(16).padStart(64, '0'))
  t.is(thrown(() => parseTrust({ gateways: many }))?.code, 'ERR_BAD_REQUEST', `at most ${MAX_VOUCHED}`)
  t.alike(parseTrust({ gateways: [G1, G1] }), [G1], 'duplicates count once')
  await rejectsWith(
    t,
    Promise.resolve().then(() => trust.set(V1, { gateways: [1] })),
    'ERR_BAD_REQUEST',
  )
  t.alike(trust.of(V1), [G1], 'a refused set changes nothing')
})

test('vouched trust: kept in the store across restarts; a voucher no longer configured counts for nothing', async (t) => {
  const dir = await t.tmp()
  const first = await open(t, dir, [V1, V2])
  await first.trust.set(V1, { gateways: [G1, G2] })
  await first.trust.set(V2, { gateways: [G3] })
  await first.trust.set(V2, { gateways: [] })
  await first.close()

  const second = await open(t, dir, [V1, V2])
  t.alike(second.trust.keys().sort(), [G1, G2].sort(), 'the last sets, as they were')
  await second.close()

  const third = await open(t, dir, [V2])
  t.alike(third.trust.keys(), [], 'V1 is not configured any more: its set is ignored')
})

test('vouched trust: a set its voucher does not renew expires (a revoke that never arrived still ends)', async (t) => {
  const { trust, removed } = await open(t, null, [V1, V2])
  const start = Date.now()
  await trust.set(V1, { gateways: [G1] })
  trust.expire(start + VOUCH_TTL_MS / 2)
  t.ok(trust.has(G1), 'still vouched for within the time')
  trust.expire(start + VOUCH_TTL_MS + 1_000)
  t.absent(trust.has(G1), "V1's set expired: G1 is served no more")
  t.alike(removed.at(-1), [G1], 'the expired key reported (its connections are closed)')
  await trust.set(V1, { gateways: [G1] })
  t.ok(trust.has(G1), 'a renewal vouches again')
})
