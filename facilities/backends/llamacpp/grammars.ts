/**
 * Grammars of JSON schemas, made once per schema: building one parses GBNF in llama.cpp,
 * and clients tend to send the same schema (one `format`, one set of tools) request after
 * request. Bounded, least recently used out first.
 */
import type { GbnfJsonSchema, Llama, LlamaGrammar } from 'node-llama-cpp'
import { MeshError } from '../../../kernel/errors.js'
import { errorMessage } from '../../../kernel/util.js'

/** Grammars kept at most. */
const MAX_GRAMMARS = 64

export class GrammarCache {
  private readonly grammars = new Map<string, Promise<LlamaGrammar>>()

  constructor(private readonly llama: Llama) {}

  /**
   * The grammar of `schema` (already in node-llama-cpp's dialect, see json-schema.ts).
   * @throws ERR_UNSUPPORTED naming `param` when llama.cpp cannot build it
   */
  async forSchema(schema: GbnfJsonSchema, param: string): Promise<LlamaGrammar> {
    const key = JSON.stringify(schema)
    let grammar = this.grammars.get(key)
    if (grammar) {
      // Most recently used last: Map keeps insertion order.
      this.grammars.delete(key)
    } else {
      // Its generic type parameters only narrow the parsed value's type, which is not used here.
      grammar = this.llama.createGrammarForJsonSchema(schema as never) as Promise<LlamaGrammar>
      grammar.catch(() => {
        if (this.grammars.get(key) === grammar) this.grammars.delete(key)
      })
    }
    this.grammars.set(key, grammar)
    if (this.grammars.size > MAX_GRAMMARS) this.grammars.delete(this.grammars.keys().next().value as string)
    try {
      return await grammar
    } catch (err) {
      throw MeshError.unsupported(param, `could not be made into a llama.cpp grammar: ${errorMessage(err)}`)
    }
  }
}
