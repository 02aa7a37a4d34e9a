/**
 * The grammar cache (grammars.ts): one grammar per schema, bounded by the schemas' total
 * size as well as their count. A stand-in llama counts the grammars made; no model needed.
 */
import test from 'brittle'
import type { GbnfJsonSchema, Llama } from 'node-llama-cpp'
import { GrammarCache, MAX_GRAMMAR_SCHEMA_BYTES } from '../../../../facilities/backends/llamacpp/grammars.js'
import { rejectsWith } from '../../../helpers/assert.js'

/** A cache over a llama whose grammars are the schemas' descriptions; `made` lists them as made. */
function counted() {
  const made: string[] = []
  const llama = {
    createGrammarForJsonSchema: async (schema: { description?: string }) => {
      const name = schema.description?.slice(0, 1) ?? ''
      made.push(name)
      if (name === '!') throw new Error('no grammar')
      return { name }
    },
  } as unknown as Pick<Llama, 'createGrammarForJsonSchema'>
  return { cache: new GrammarCache(llama), made }
}

/** A string schema of about `bytes` bytes of JSON, told apart by its first letter. */
const schemaOf = (letter: string, bytes: number): GbnfJsonSchema => ({
  type: 'string',
  description: letter.repeat(bytes),
})

test('grammar cache: one grammar per schema, the least recently used out past the byte bound', async (t) => {
  const { cache, made } = counted()
  const third = Math.floor(MAX_GRAMMAR_SCHEMA_BYTES / 3) + 1024
  const [a, b, c] = ['a', 'b', 'c'].map((l) => schemaOf(l, third)) as [
    GbnfJsonSchema,
    GbnfJsonSchema,
    GbnfJsonSchema,
  ]
  await cache.forSchema(a, 'format')
  await cache.forSchema({ ...a }, 'format')
  t.alike(made, ['a'], 'the same schema again: the same grammar')
  await cache.forSchema(b, 'format')
  await cache.forSchema(a, 'format')
  t.alike(made, ['a', 'b'], 'two thirds of the bound: both kept')
  await cache.forSchema(c, 'format')
  await cache.forSchema(a, 'format')
  t.alike(made, ['a', 'b', 'c'], 'a third schema past the bound: the most recently used kept')
  await cache.forSchema(b, 'format')
  t.alike(made, ['a', 'b', 'c', 'b'], 'the least recently used was let go, though far fewer than 64 are kept')

  const big = schemaOf('d', MAX_GRAMMAR_SCHEMA_BYTES + 1)
  await cache.forSchema(big, 'format')
  await cache.forSchema(big, 'format')
  t.alike(made.slice(4), ['d', 'd'], 'a schema over the bound alone is made each time, never kept')
  await cache.forSchema(schemaOf('e', 10), 'format')
  await cache.forSchema(schemaOf('e', 10), 'format')
  t.alike(made.slice(6), ['e'], 'and the cache still keeps small ones after it')
})

test('grammar cache: a schema llama.cpp cannot make into a grammar is refused and not kept', async (t) => {
  const { cache, made } = counted()
  const err = await rejectsWith(t, cache.forSchema(schemaOf('!', 10), 'tools'), 'ERR_UNSUPPORTED')
  t.is(err?.details?.param, 'tools', 'naming the caller’s field')
  await rejectsWith(t, cache.forSchema(schemaOf('!', 10), 'tools'), 'ERR_UNSUPPORTED', 'again')
  t.alike(made, ['!', '!'], 'tried again: a failure is not cached')
})
