import test from 'brittle'
import { newEntry, type ProcessorEntry } from '../../../facilities/router/processor-entry.js'
import type { ModelWaiting } from '../../../facilities/router/router.facility.js'
import { copyTarget, DemandTracker, loadTarget } from '../../../workers/gateway/placement-demand.js'

const config = { queueWaitMs: 1_000, windowMs: 3_000, cooldownMs: 10_000 }
const queue = (oldestSince: number, count = 2) =>
  new Map<string, ModelWaiting>([['m', { count, oldestSince }]])
const empty = new Map<string, ModelWaiting>()

test('placement: sustained queueing is due an action, momentary queueing is not', (t) => {
  const d = new DemandTracker(config)
  t.alike(d.observe(queue(0), 500), [], 'waited 0.5 s: below queueWaitMs')
  t.alike(d.observe(queue(0), 1_000), [], 'pressure starts at 1 s')
  t.alike(d.observe(queue(0), 3_000), [], '2 s of pressure: not yet the window')
  t.alike(d.observe(empty, 3_500), [], 'the queue drained: pressure resets')
  t.alike(d.observe(queue(3_600), 4_600), [], 'pressure again from 4.6 s')
  t.alike(d.observe(queue(3_600), 7_000), [], '2.4 s in')
  t.alike(d.observe(queue(5_000), 7_599), [], 'a newer oldest waiter (1 s waited still) keeps the pressure')
  t.alike(d.observe(queue(5_000), 7_600), ['m'], 'pressure held for the whole window: due')
})

test('placement: one action per model per cooldown, none while one runs, failures back off', (t) => {
  const d = new DemandTracker(config)
  d.observe(queue(0), 1_000)
  t.alike(d.observe(queue(0), 4_000), ['m'])
  d.started('m', 4_000)
  t.alike(d.observe(queue(0), 20_000), [], 'still under way')
  d.ended('m', true)
  t.alike(d.observe(queue(0), 13_999), [], 'cooldown: 10 s from the start')
  t.alike(d.observe(queue(0), 14_000), ['m'], 'after it')
  d.started('m', 14_000)
  d.ended('m', false)
  t.is(d.cooldownLeft('m', 14_000), 20_000, 'a failure doubles the cooldown')
  t.alike(d.observe(queue(0), 30_000), [])
  t.alike(d.observe(queue(0), 34_000), ['m'])
  d.started('m', 34_000)
  d.ended('m', true)
  t.is(d.cooldownLeft('m', 34_000), 10_000, 'a success resets it')
})

function entry(n: number, opts: Partial<ProcessorEntry> & { held?: string[]; loadedNow?: string[] | null }) {
  const e = newEntry(Buffer.alloc(32, n))
  e.models = new Set(opts.held ?? ['m'])
  e.loaded =
    opts.loadedNow === undefined ? new Set() : opts.loadedNow === null ? null : new Set(opts.loadedNow)
  e.backend = 'llamacpp'
  e.modelsKey = Buffer.alloc(32, 100 + n).toString('hex')
  return Object.assign(e, opts)
}

test('placement: loads on an idle holder that has it cold, quickest first; copies onto an idle non-holder', (t) => {
  const loaded = entry(1, { loadedNow: ['m'] })
  const busyCold = entry(2, { active: 1 })
  const slow = entry(3, { loadMs: new Map([['m', 900]]) })
  const quick = entry(4, { loadMs: new Map([['m', 100]]) })
  const silent = entry(5, { loadedNow: null })
  t.is(loadTarget([loaded, busyCold, slow, quick, silent], 'm')?.id.slice(0, 2), '04')
  t.is(loadTarget([loaded, busyCold, silent], 'm'), null, 'none idle and cold')
  const other = entry(6, { held: ['x'] })
  const ollama = entry(7, { held: ['x'], backend: 'ollama' })
  const draining = entry(8, { held: ['x'], state: 'draining' })
  t.is(copyTarget([loaded, ollama, draining, other], 'm')?.id.slice(0, 2), '06')
  t.is(copyTarget([loaded, ollama], 'm'), null)
  const noStore = entry(9, { held: ['x'], modelsKey: undefined })
  t.is(copyTarget([loaded, noStore], 'm'), null, 'a processor with no model store cannot take a copy')
})
