/**
 * V8 flags every llm-mesh process runs with: the bin's shebang
 * (`#!/usr/bin/env -S node ...`, which must list the same flags) passes them
 * when `llm-mesh` is run, and workers llm-mesh spawns itself get them too.
 *
 * `--max-semi-space-size=64` (MiB): a gateway under load keeps every request
 * in flight (promises, buffers, timers) alive across a scavenge of V8's young
 * generation, so with the default 16 MiB semi-space that state is copied on
 * each of many scavenges and then promoted to the old generation, whose
 * collector then has to mark it too. A larger young generation scavenges a
 * quarter as often; it grows to this size only under allocation pressure.
 * (Measured: docs/benchmarks.md, "HTTP API".)
 */
export const NODE_FLAGS: readonly string[] = ['--max-semi-space-size=64']
