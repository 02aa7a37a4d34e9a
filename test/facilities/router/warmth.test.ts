import test from 'brittle'
import { newEntry, type ProcessorEntry } from '../../../facilities/router/processor-entry.js'
import { STRATEGIES } from '../../../facilities/router/strategies.js'
import { busyWaitMs, warmCandidates } from '../../../facilities/router/warmth.js'
import { routerOver, standIn } from './stand-in-pool.js'

function entry(n: number, loaded: string[] | null, opts: Partial<ProcessorEntry> = {}): ProcessorEntry {
  const e = newEntry(Buffer.alloc(32, n))
  e.models = new Set(['m'])
  e.loaded = loaded === null ? null : new Set(loaded)
  return Object.assign(e, opts)
}

const ids = (list: ProcessorEntry[]) => list.map((e) => e.id.slice(0, 2)).sort()
const none = () => [] as ProcessorEntry[]

test('warmth: a loaded processor with a free slot wins over any cold one, however quick to load', (t) => {
  const warm = entry(1, ['m'])
  const cold = entry(2, [], { loadMs: new Map([['m', 0]]) })
  const input = { model: 'm', busyLoaded: none, waiting: () => 0, serviceMs: 60_000, coldLoadMs: 0 }
  t.alike(ids(warmCandidates({ ...input, free: [warm, cold] })), ['01'])
  t.alike(
    ids(warmCandidates({ ...input, model: 'm:latest', free: [cold, warm] })),
    ['01'],
    ':latest is the same model',
  )
  const unreported = entry(3, null)
  t.alike(
    ids(warmCandidates({ ...input, free: [unreported, cold] })),
    ['03'],
    'one that does not report counts as loaded',
  )
})

test('warmth: cold or wait, by the expected wait', (t) => {
  const busy = entry(1, ['m'], { inflight: 1, capacity: 1 })
  const cold = entry(2, [])
  const base = { model: 'm', free: [cold], busyLoaded: () => [busy], serviceMs: 1_000, coldLoadMs: 10_000 }
  t.is(busyWaitMs([busy], 0, 1_000), 1_000, 'one slot, nothing waiting: one service time')
  t.alike(
    warmCandidates({ ...base, waiting: () => 0 }),
    [],
    'a 10 s load loses to a 1 s wait: the request waits',
  )
  t.alike(
    ids(warmCandidates({ ...base, waiting: () => 20 })),
    ['02'],
    '21 s of queue ahead: the cold one loads',
  )
  cold.loadMs.set('m', 300)
  t.alike(
    ids(warmCandidates({ ...base, waiting: () => 0 })),
    ['02'],
    'a measured 0.3 s load beats a 1 s wait',
  )
  busy.activeElsewhere = 3
  t.is(busyWaitMs([busy], 0, 1_000), 4_000, "other gateways' work past its capacity counts")
  t.alike(
    ids(warmCandidates({ ...base, busyLoaded: none, waiting: () => 0 })),
    ['02'],
    'nothing loaded anywhere: cold it is',
  )
})

test('warmth: among cold ones, the quickest to load', (t) => {
  const a = entry(1, [], { loadMs: new Map([['m', 5_000]]) })
  const b = entry(2, [], { loadMs: new Map([['m', 400]]) })
  const c = entry(3, [])
  const got = warmCandidates({
    model: 'm',
    free: [a, b, c],
    busyLoaded: none,
    waiting: () => 0,
    serviceMs: 1,
    coldLoadMs: 10_000,
  })
  t.alike(ids(got), ['02'])
})

test('scheduler: a cold processor is never chosen while a loaded one has a free slot, whatever the strategy', async (t) => {
  for (const strategy of STRATEGIES) {
    const warm = standIn(1)
    warm.status.loaded = ['m']
    const cold = standIn(2)
    cold.status.loaded = []
    cold.status.loadMs = { m: 1 }
    const router = await routerOver([warm, cold], { strategy, coldLoadMs: 0 })
    const seen = new Set<string>()
    for (let i = 0; i < 12; i++) {
      const lease = await router.lease('m')
      seen.add(lease.entry.id.slice(0, 2))
      lease.answered({ ttftMs: 5, completionTokens: 4, evalMs: 4 })
    }
    t.alike([...seen], ['01'], `${strategy}: every request to the loaded processor`)
    await router.close()
  }
})

test('scheduler: with the loaded one busy, a request waits for it rather than load a model for 10 s, and takes a cheap cold start', async (t) => {
  const warm = standIn(1)
  warm.status.loaded = ['m']
  const cold = standIn(2)
  cold.status.loaded = []
  const router = await routerOver([warm, cold])
  t.teardown(() => router.close())
  const held = await router.lease('m')
  t.is(held.entry.id.slice(0, 2), '01')
  const waiting = router.lease('m')
  t.is(router.queued, 1, 'cold load unmeasured (10 s by default) > one service time: it waits')
  t.is(router.waitingByModel().get('m')?.count, 1, 'the queue says which model waits')
  held.answered()
  const next = await waiting
  t.is(next.entry.id.slice(0, 2), '01', 'and gets the loaded slot once it frees')

  const quick = await routerOver([warm, { ...cold, status: { ...cold.status, loadMs: { m: 50 } } }])
  t.teardown(() => quick.close())
  const a = await quick.lease('m')
  const b = await quick.lease('m')
  t.alike(
    [a.entry.id.slice(0, 2), b.entry.id.slice(0, 2)],
    ['01', '02'],
    'a measured 50 ms load beats waiting',
  )
  for (const l of [next, a, b]) l.answered()
})
