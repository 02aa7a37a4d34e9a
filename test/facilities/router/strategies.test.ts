import test from 'brittle'
import {
  type Candidate,
  choose,
  expectedMs,
  type StrategyState,
} from '../../../facilities/router/strategies.js'

function state(random: () => number = Math.random): StrategyState {
  return { turn: 0, cursor: new Map(), random }
}

function cand(id: string, over: Partial<Candidate> = {}): Candidate {
  return {
    id,
    capacity: 2,
    inflight: 0,
    activeElsewhere: 0,
    ttftMs: null,
    tokensPerSecond: null,
    weight: 1,
    ...over,
  }
}

function counts(picks: Candidate[]): Record<string, number> {
  const out: Record<string, number> = {}
  for (const p of picks) out[p.id] = (out[p.id] ?? 0) + 1
  return out
}

test('strategies: least-loaded picks the lowest load and rotates ties', (t) => {
  const s = state()
  const a = cand('a', { inflight: 1 })
  const b = cand('b', { inflight: 0, activeElsewhere: 1, capacity: 4 })
  const c = cand('c', { inflight: 1, capacity: 4 })
  t.is(choose('least-loaded', 'm', [a, b, c], s).id, 'b', '1/4 beats 1/2 (load from other gateways counts)')
  const even = [cand('x'), cand('y'), cand('z')]
  const picks = Array.from({ length: 30 }, () => choose('least-loaded', 'm', even, s))
  t.alike(counts(picks), { x: 10, y: 10, z: 10 }, 'equal processors share evenly')
})

test('strategies: fastest prefers the shortest expected answer, tries unmeasured ones first', (t) => {
  const s = state()
  const fast = cand('fast', { ttftMs: 5, tokensPerSecond: 400 })
  const slow = cand('slow', { ttftMs: 50, tokensPerSecond: 50 })
  t.is(expectedMs(fast, 64), 5 + 160)
  t.is(expectedMs(slow, 64), 50 + 1280)
  const picks = Array.from({ length: 20 }, () => choose('fastest', 'm', [slow, fast], s))
  t.alike(counts(picks), { fast: 20 })
  const fresh = cand('fresh')
  t.is(choose('fastest', 'm', [slow, fast, fresh], s).id, 'fresh', 'a new processor gets measured')
  // A busy fast processor loses to an idle one of similar speed.
  const busyFast = cand('busy', { ttftMs: 5, tokensPerSecond: 400, inflight: 2, capacity: 2 })
  const idleAlmost = cand('idle', { ttftMs: 6, tokensPerSecond: 350 })
  t.is(choose('fastest', 'm', [busyFast, idleAlmost], s).id, 'idle')
  // Within 5% is a tie: both get traffic.
  const twinA = cand('ta', { ttftMs: 10, tokensPerSecond: 200 })
  const twinB = cand('tb', { ttftMs: 10, tokensPerSecond: 205 })
  const twins = counts(Array.from({ length: 10 }, () => choose('fastest', 'm', [twinA, twinB], s)))
  t.ok((twins.ta ?? 0) >= 4 && (twins.tb ?? 0) >= 4, `twins share: ${JSON.stringify(twins)}`)
})

test('strategies: round-robin rotates per model, in key order', (t) => {
  const s = state()
  const list = [cand('c'), cand('a'), cand('b')]
  t.alike(
    Array.from({ length: 6 }, () => choose('round-robin', 'm1', list, s).id),
    ['a', 'b', 'c', 'a', 'b', 'c'],
  )
  t.is(choose('round-robin', 'm2', list, s).id, 'a', 'another model has its own rotation')
})

test('strategies: random-weighted follows weight x capacity', (t) => {
  let seed = 42
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31
    return seed / 2 ** 31
  }
  const s = state(random)
  const heavy = cand('heavy', { weight: 3, capacity: 2 })
  const light = cand('light', { weight: 1, capacity: 2 })
  const none = cand('none', { weight: 0, capacity: 8 })
  const c = counts(
    Array.from({ length: 4000 }, () => choose('random-weighted', 'm', [heavy, light, none], s)),
  )
  t.absent(c.none, 'weight 0 gets nothing')
  const ratio = (c.heavy ?? 0) / (c.light ?? 1)
  t.ok(ratio > 2.6 && ratio < 3.4, `heavy:light ~ 3:1 (${ratio.toFixed(2)})`)
  t.is(choose('random-weighted', 'm', [none], s).id, 'none', 'all weights 0: still an answer')
})
