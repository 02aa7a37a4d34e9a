/**
 * V8 flags for llm-mesh processes under load: `npm start` runs `llm-mesh up`
 * with them, `up` starts its processors with them, and the benches start every
 * worker with them. An operator who runs `llm-mesh gateway` on its own passes
 * them with NODE_OPTIONS (docs/architecture.md); the bin's shebang does not,
 * since `env -S` is missing from BusyBox (Alpine images).
 *
 * `--max-semi-space-size=64` (MiB): a gateway under load keeps every request
 * in flight (promises, buffers, timers) alive across a scavenge of V8's young
 * generation, so with the default 16 MiB semi-space that state is copied on
 * each of many scavenges and then promoted to the old generation, whose
 * collector then has to mark it too. A larger young generation scavenges a
 * quarter as often; it grows to this size only under allocation pressure.
 */
export const NODE_FLAGS: readonly string[] = ['--max-semi-space-size=64']
