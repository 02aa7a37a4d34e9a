/**
 * Grammars of JSON schemas, made once per schema: building one parses GBNF in llama.cpp,
 * and clients tend to send the same schema (one `format`, one set of tools) request after
 * request. Keyed by a hash of the schema (not the schema's JSON, which may be megabytes) and
 * bounded by count and by the schemas' total size, least recently used out first.
 */
import { createHash } from 'node:crypto'
import type { GbnfJsonSchema, Llama, LlamaGrammar } from 'node-llama-cpp'
import { MeshError } from '../../../kernel/errors.js'
import { errorMessage } from '../../../kernel/util.js'

/** Grammars kept at most. */
const MAX_GRAMMARS = 64
/** Bytes of schema JSON whose grammars are kept at most: a grammar's size follows its schema's. */
export const MAX_GRAMMAR_SCHEMA_BYTES = 8 * 1024 * 1024

interface Entry {
  grammar: Promise<LlamaGrammar>
  /** Bytes of the schema's JSON. */
  bytes: number
}

export class GrammarCache {
  private readonly grammars = new Map<string, Entry>()
  /** Sum of the entries' `bytes`. */
  private bytes = 0

  constructor(private readonly llama: Pick<Llama, 'createGrammarForJsonSchema'>) {}

  /**
   * The grammar of `schema` (already in node-llama-cpp's dialect, see json-schema.ts).
   * @throws ERR_UNSUPPORTED naming `param` when llama.cpp cannot build it
   */
  async forSchema(schema: GbnfJsonSchema, param: string): Promise<LlamaGrammar> {
    const json = JSON.stringify(schema)
    const key = createHash('sha256').update(json).digest('base64')
    let entry = this.grammars.get(key)
    if (entry) {
      // Most recently used last: Map keeps insertion order.
      this.grammars.delete(key)
    } else {
      // Its generic type parameters only narrow the parsed value's type, which is not used here.
      const grammar = this.llama.createGrammarForJsonSchema(schema as never) as Promise<LlamaGrammar>
      const made: Entry = { grammar, bytes: Buffer.byteLength(json) }
      grammar.catch(() => {
        if (this.grammars.get(key) === made) this.drop(key)
      })
      this.bytes += made.bytes
      entry = made
    }
    this.grammars.set(key, entry)
    this.evict()
    try {
      return await entry.grammar
    } catch (err) {
      throw MeshError.unsupported(param, `could not be made into a llama.cpp grammar: ${errorMessage(err)}`)
    }
  }

  /** Least recently used out until within both bounds (a schema over the byte bound alone is not kept). */
  private evict(): void {
    while (this.grammars.size > MAX_GRAMMARS || this.bytes > MAX_GRAMMAR_SCHEMA_BYTES) {
      this.drop(this.grammars.keys().next().value as string)
    }
  }

  private drop(key: string): void {
    const entry = this.grammars.get(key)
    if (!entry) return
    this.grammars.delete(key)
    this.bytes -= entry.bytes
  }
}
