/**
 * JSON Schema into node-llama-cpp's grammar dialect (json-schema.ts): what is kept, what is
 * made stricter yet still valid, what is refused. No model needed.
 */
import test from 'brittle'
import {
  ANY_JSON,
  MAX_SCHEMA_DEPTH,
  toGrammarSchema,
} from '../../../../facilities/backends/llamacpp/json-schema.js'
import { thrown } from '../../../helpers/assert.js'

test('json schema: translated into what node-llama-cpp enforces', (t) => {
  t.alike(
    toGrammarSchema(
      {
        title: 'a person',
        type: 'object',
        properties: {
          name: { type: 'string', minLength: 1, description: 'who' },
          nick: { type: ['string', 'null'] },
        },
        required: ['name'],
      },
      'format',
    ),
    {
      type: 'object',
      properties: {
        name: { type: 'string', minLength: 1, description: 'who' },
        nick: { oneOf: [{ type: 'string' }, { type: 'null' }] },
      },
      additionalProperties: false,
    },
    'described properties only (all written: still valid), a type list as alternatives',
  )
  t.alike(
    toGrammarSchema({ type: 'object' }, 'format'),
    { type: 'object', properties: {}, additionalProperties: true },
    'an object that describes nothing may hold anything',
  )
  t.alike(toGrammarSchema({}, 'format'), ANY_JSON, 'no constraint: any JSON')
  t.alike(toGrammarSchema({ anyOf: [{ const: 1 }, { enum: ['a', null] }] }, 'format'), {
    oneOf: [{ const: 1 }, { enum: ['a', null] }],
  })
  t.alike(
    toGrammarSchema({ type: 'array', items: [{ type: 'integer' }, { type: 'boolean' }] }, 'format'),
    { type: 'array', prefixItems: [{ type: 'integer' }, { type: 'boolean' }] },
    'a draft-4 tuple as prefixItems',
  )
  t.alike(
    toGrammarSchema({ type: 'string', format: 'date-time' }, 'format'),
    { type: 'string', format: 'date-time' },
    'a date format is enforced',
  )
  t.alike(
    toGrammarSchema({ type: 'string', format: 'email' }, 'format'),
    { type: 'string' },
    'other formats annotate',
  )
  t.alike(
    toGrammarSchema({ $ref: '#/definitions/n', definitions: { n: { type: 'number' } } }, 'format'),
    { $ref: '#/$defs/n', $defs: { n: { type: 'number' } } } as never,
    'definitions as $defs',
  )
})

test('json schema: enum and const keep only the values their type allows', (t) => {
  t.alike(
    toGrammarSchema({ type: 'string', enum: ['a', 1] }, 'format'),
    { enum: ['a'] },
    'a number out of a string enum',
  )
  t.alike(
    toGrammarSchema({ type: ['integer', 'null'], enum: [1, 1.5, null, 'x', true] }, 'format'),
    { enum: [1, null] },
    'a type list: the values of any of its types',
  )
  t.alike(
    toGrammarSchema({ type: 'number', enum: [1, 2.5] }, 'format'),
    { enum: [1, 2.5] },
    'integers are numbers',
  )
  t.alike(toGrammarSchema({ type: 'string', const: 'a' }, 'format'), { const: 'a' }, 'a const of its type')
  for (const [what, schema] of [
    ['an enum with no value of its type', { type: 'string', enum: [1, null] }],
    ['a const not of its type', { type: 'integer', const: 1.5 }],
    ['a const with a keyword the grammar would ignore', { const: 'a', minLength: 2 }],
  ] as const) {
    const err = thrown(() => toGrammarSchema(schema, 'format'))
    t.is(err?.code, 'ERR_UNSUPPORTED', what)
    t.is(err?.details?.param, 'format', `${what}: names format`)
  }
})

test('json schema: refused naming the caller’s field', (t) => {
  for (const [what, schema] of [
    ['pattern', { type: 'string', pattern: 'a' }],
    ['exclusiveMaximum', { type: 'number', exclusiveMaximum: 3 }],
    ['not', { not: { type: 'string' } }],
    ['an object in enum', { enum: [{ a: 1 }] }],
    ['type with anyOf', { type: 'string', anyOf: [{ maxLength: 1 }] }],
    ['a date format with a length', { type: 'string', format: 'date', maxLength: 3 }],
  ] as const) {
    const err = thrown(() => toGrammarSchema(schema, 'tools'))
    t.is(err?.code, 'ERR_UNSUPPORTED', what)
    t.is(err?.details?.param, 'tools', `${what}: names tools`)
  }
  for (const [what, schema] of [
    ['not a schema', 'string'],
    ['an empty anyOf', { anyOf: [] }],
    ['required not a list', { type: 'object', required: 'a' }],
  ] as const) {
    t.is(thrown(() => toGrammarSchema(schema, 'format'))?.code, 'ERR_BAD_REQUEST', what)
  }
})

/** A schema `levels` deep: arrays of arrays of … strings. */
function nested(levels: number): unknown {
  let schema: unknown = { type: 'string' }
  for (let i = 1; i < levels; i++) schema = { type: 'array', items: schema }
  return schema
}

test('json schema: nested no deeper than MAX_SCHEMA_DEPTH', (t) => {
  t.ok(toGrammarSchema(nested(MAX_SCHEMA_DEPTH), 'format'), `${MAX_SCHEMA_DEPTH} levels: translated`)
  for (const [levels, param] of [
    [MAX_SCHEMA_DEPTH + 1, 'format'],
    [20_000, 'tools'],
  ] as const) {
    const err = thrown(() => toGrammarSchema(nested(levels), param))
    t.is(err?.code, 'ERR_UNSUPPORTED', `${levels} levels: refused, not a stack overflow`)
    t.is(err?.details?.param, param, `${levels} levels: names ${param}`)
  }
  const deepDef = { $ref: '#/$defs/d', $defs: { d: nested(MAX_SCHEMA_DEPTH + 1) } }
  t.is(thrown(() => toGrammarSchema(deepDef, 'format'))?.code, 'ERR_UNSUPPORTED', 'in a definition too')
})
