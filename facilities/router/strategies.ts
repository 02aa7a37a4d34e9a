/**
 * Routing strategies: given the processors that serve a model and have a free
 * slot, which one takes the next request. Pure functions of the candidates'
 * numbers, so they can be tested without a mesh; ties rotate through a
 * counter the router owns, so equal processors share traffic evenly.
 */

import { STRATEGIES } from '../../kernel/config.js'

export { STRATEGIES }
export type StrategyName = (typeof STRATEGIES)[number]

/** What a strategy may look at. */
export interface Candidate {
  id: string
  capacity: number
  /** Requests this gateway has running on it. */
  inflight: number
  /**
   * Generations the processor last reported running for other gateways: its
   * count minus this gateway's requests at that moment. (Its raw count goes
   * stale between heartbeats, and would keep counting our own finished
   * requests against it.)
   */
  activeElsewhere: number
  /** EWMA of time to first token, ms; null until measured. */
  ttftMs: number | null
  /** EWMA of tokens/s while generating; null until measured. */
  tokensPerSecond: number | null
  /** Relative weight for random-weighted (the processor's configured weight). */
  weight: number
}

export interface StrategyState {
  /** Advances on every pick: rotation for round-robin and tie-breaking. */
  turn: number
  /** Round-robin position per model. */
  cursor: Map<string, number>
  random: () => number
}

/** Tokens assumed per answer when scoring speed (an EWMA of real answers once known). */
export const DEFAULT_EXPECTED_TOKENS = 64

const load = (c: Candidate) => (c.inflight + c.activeElsewhere) / c.capacity

/** The expected time for one more answer on `c`, ms; unmeasured processors score best, to be tried. */
export function expectedMs(c: Candidate, expectedTokens: number): number {
  if (c.ttftMs === null || c.tokensPerSecond === null || c.tokensPerSecond <= 0) return 0
  return c.ttftMs + (expectedTokens * 1000) / c.tokensPerSecond
}

/** The minimum of `score` among `list`, ties rotated by `turn`. */
function best(list: Candidate[], score: (c: Candidate) => number, turn: number): Candidate {
  let min = Number.POSITIVE_INFINITY
  let tied: Candidate[] = []
  for (const c of list) {
    const s = score(c)
    // Scores within 5% count as a tie, so noise in measurements does not pin one processor.
    if (s < min * 0.95 || tied.length === 0) {
      min = s
      tied = [c]
    } else if (s <= min * 1.05) {
      if (s < min) min = s
      tied.push(c)
    }
  }
  return tied[turn % tied.length] as Candidate
}

/**
 * Picks one of `candidates` (non-empty; all serve the model and have a free slot).
 */
export function choose(
  strategy: StrategyName,
  model: string,
  candidates: Candidate[],
  state: StrategyState,
  expectedTokens = DEFAULT_EXPECTED_TOKENS,
): Candidate {
  const turn = state.turn++
  switch (strategy) {
    case 'least-loaded':
      return best(candidates, load, turn)
    case 'fastest':
      // Expected completion time, stretched by how busy the processor already is.
      return best(candidates, (c) => expectedMs(c, expectedTokens) * (1 + load(c)), turn)
    case 'round-robin': {
      // Rotation over processors sorted by key, so every gateway rotates the same way.
      const sorted = [...candidates].sort((a, b) => (a.id < b.id ? -1 : 1))
      const at = state.cursor.get(model) ?? 0
      state.cursor.set(model, at + 1)
      return sorted[at % sorted.length] as Candidate
    }
    case 'random-weighted': {
      const weights = candidates.map((c) => Math.max(0, c.weight) * c.capacity)
      const total = weights.reduce((a, b) => a + b, 0)
      if (total <= 0) return candidates[turn % candidates.length] as Candidate
      let r = state.random() * total
      for (const [i, w] of weights.entries()) {
        r -= w
        if (r < 0) return candidates[i] as Candidate
      }
      return candidates[candidates.length - 1] as Candidate
    }
  }
}
