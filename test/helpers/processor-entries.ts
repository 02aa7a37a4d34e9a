import { newEntry, type ProcessorEntry } from '../../facilities/router/processor-entry.js'

/**
 * A router entry for a llama.cpp processor with a model store: key bytes all `n`, holding
 * `held`, with `loaded` in memory (none when omitted), its models key all `100 + n`.
 */
export function llamaEntry(n: number, held: string[], loaded: string[] = []): ProcessorEntry {
  const e = newEntry(Buffer.alloc(32, n))
  e.models = new Set(held)
  e.loaded = new Set(loaded)
  e.backend = 'llamacpp'
  e.modelsKey = Buffer.alloc(32, 100 + n).toString('hex')
  return e
}
