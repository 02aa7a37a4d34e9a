/**
 * Which test files test/run.ts may run beside another one, and in what order.
 *
 * - `alone`: files with a timing assert tight enough that a second test file
 *   busy on the other core could break it (a bound of a few hundred ms to a
 *   few s on something the machine's speed moves, a p99 in µs, a race that a
 *   slow receiver loses). They run last, one at a time, with nothing beside them.
 * - `shared`: every other file, new ones too: run two at a time
 *   (LLM_MESH_TEST_JOBS, default 2), the files in SLOW_FIRST first (longest
 *   first, so the two lanes end close together), then the rest in path order.
 *   A shared file may wait for events (`until`, a reconnect, a child process
 *   starting) but only against bounds that hold on a machine twice as slow.
 *
 * A new test with a tight timing assert goes into ALONE; a new test that takes
 * more than ~30 s goes into SLOW_FIRST. Paths are relative to test/, without
 * the extension.
 */
export type Lane = 'shared' | 'alone'

export const ALONE: readonly string[] = [
  'facilities/router/scale-sim.test', // pick and release p99 under 1 ms
  'facilities/auth/login-guard.test', // spacing of 300 ms measured both ways
  'facilities/auth/passwords.test', // a real login under 1 s beside a flood
  'facilities/net/net.test', // first chunks under 600 ms of a 1 s call
  'facilities/backends/llamacpp/model-pull.test', // stopped midway: a slow receiver gets it all first
  'facilities/backends/ollama/ollama-transport.test', // sockets given up within 2 s
  'facilities/backends/ollama/ollama.test', // failures within 2 s
  'integration/churn.test', // serving again within 5 s
  'integration/fairness.test', // Bob answered within 5 s beside Alice's flood
  'integration/faults.test', // detection bound + 1.5 s
  'integration/routing.test', // the next request starts within 1.5 s
  'integration/across-nat.test', // failover within the detection bound + 2 s
  'integration/invites.test', // redeemed within 5 s
  'integration/model-pull.test', // stopped midway: a slow receiver gets it all first
  'integration/gateway-join.test', // ~30 s alone against brittle's 30 s test timeout
]

/** Shared files measured longest (s in a sequential run on a loaded VM), started first. */
export const SLOW_FIRST: readonly string[] = [
  'bin/cli.test', // 154
  'integration/billing.test', // 79
  'workers/gateway/gateway-http.test', // 76
  'integration/mesh.test', // 65
  'workers/client/reconnect.test', // 59
  'integration/health-drain.test', // 57
  'integration/sampling.test', // 57
  'facilities/models/blob-store.test', // 43
  'integration/sdk-frameworks.test', // 41
  'facilities/backends/llamacpp/llamacpp.test', // 41
  'integration/model-inventory.test', // 40
  'integration/model-admin.test', // 35
  'workers/gateway/openapi.test', // 31
  'integration/accounts-usage.test', // 31
]

const key = (rel: string) => rel.replace(/\.js$/, '').replaceAll('\\', '/')

export function laneOf(rel: string): Lane {
  return ALONE.includes(key(rel)) ? 'alone' : 'shared'
}

/** `rels` with the SLOW_FIRST ones first (in that list's order), the rest in the given order. */
export function slowFirst(rels: string[]): string[] {
  const rank = (rel: string) => {
    const i = SLOW_FIRST.indexOf(key(rel))
    return i === -1 ? SLOW_FIRST.length : i
  }
  return rels
    .map((rel, i) => ({ rel, i }))
    .sort((a, b) => rank(a.rel) - rank(b.rel) || a.i - b.i)
    .map((x) => x.rel)
}
