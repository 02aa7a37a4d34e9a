/**
 * `format` on llama.cpp: the answer is JSON under a grammar made from the schema, on chat,
 * templated and raw generate, whole and streamed; what no grammar can enforce is refused.
 * The tiny model never ends a string by itself, so the schemas bound their strings.
 */
import test from 'brittle'
import { TINY_MODEL_NAME } from '../../../../facilities/tiny-model/tiny-model.js'
import type { ChatRequest, JsonSchema } from '../../../../kernel/wire.js'
import { rejectsWith } from '../../../helpers/assert.js'
import { collected, GREEDY, tinyBackend, validates } from './tiny-backend.js'

const messages = [{ role: 'user' as const, content: 'abc' }]

const PERSON: JsonSchema = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 6 },
    // Numbers as an enum: node-llama-cpp's number grammar allows 16-digit exponents, which the tiny model writes.
    age: { enum: [18, 30] },
    pet: { enum: ['cat', 'dog', null] },
    tags: { type: 'array', items: { type: 'string', maxLength: 3 }, maxItems: 2 },
    verified: { type: 'boolean' },
    nickname: { anyOf: [{ type: 'null' }, { type: 'string', maxLength: 4 }] },
  },
  required: ['name', 'age'],
}

test('llamacpp format: any JSON object, on chat and generate (templated and raw)', async (t) => {
  const backend = await tinyBackend(t)
  const format = { type: 'json' as const }
  const answers = [
    await backend.chat({ model: TINY_MODEL_NAME, messages, format, options: GREEDY }),
    await backend.generate({ model: TINY_MODEL_NAME, prompt: 'abc', format, options: GREEDY }),
    await backend.generate({ model: TINY_MODEL_NAME, prompt: 'abc', raw: true, format, options: GREEDY }),
  ]
  for (const [i, r] of answers.entries()) {
    const value: unknown = JSON.parse(r.text)
    t.ok(
      typeof value === 'object' && value !== null && !Array.isArray(value),
      `answer ${i} is an object: ${JSON.stringify(r.text)}`,
    )
    t.is(r.doneReason, 'stop')
  }
  const plain = await backend.chat({ model: TINY_MODEL_NAME, messages, options: GREEDY })
  t.is(plain.text, 'defghijklmnopqrstuvwxyz', 'without format the model writes what it likes')
})

test('llamacpp format: JSON valid against the schema, whole and streamed', async (t) => {
  const backend = await tinyBackend(t)
  const req: ChatRequest = {
    model: TINY_MODEL_NAME,
    messages,
    format: { type: 'json', schema: PERSON },
    options: GREEDY,
  }
  const whole = await backend.chat(req)
  const value: unknown = JSON.parse(whole.text)
  const check = validates(PERSON, value)
  t.ok(check.ok, `valid: ${JSON.stringify(whole.text)} ${check.errors}`)
  t.is(whole.doneReason, 'stop')
  t.ok(whole.completionTokens > 0)

  const { result, pieces, deltas } = await collected((cb) => backend.chat(req, cb))
  t.is(result.text, whole.text, 'streamed: the same JSON')
  t.is(pieces.join(''), result.text, 'in text pieces')
  t.alike(deltas, [], 'nothing else')

  const templated = await backend.generate({
    model: TINY_MODEL_NAME,
    prompt: 'abc',
    format: { type: 'json', schema: PERSON },
    options: GREEDY,
  })
  t.ok(validates(PERSON, JSON.parse(templated.text)).ok, `generate: ${JSON.stringify(templated.text)}`)

  const cut = await backend.chat({ ...req, options: { ...GREEDY, num_predict: 4 } })
  t.is(cut.doneReason, 'length', 'cut by num_predict')
  t.ok(
    whole.text.startsWith(cut.text) && cut.text.length < whole.text.length,
    `partial JSON: ${JSON.stringify(cut.text)}`,
  )
})

test('llamacpp format: schemas no grammar enforces are refused, bad ones are bad requests', async (t) => {
  const backend = await tinyBackend(t)
  const withSchema = (schema: unknown) =>
    backend.chat({ model: TINY_MODEL_NAME, messages, format: { type: 'json', schema: schema as JsonSchema } })
  const unsupported: Array<[string, unknown]> = [
    ['pattern', { type: 'string', pattern: '^a' }],
    ['minimum', { type: 'object', properties: { n: { type: 'number', minimum: 0 } } }],
    ['allOf', { allOf: [{ type: 'object' }] }],
    ['uniqueItems', { type: 'array', uniqueItems: true }],
    ['a required property it does not describe', { type: 'object', required: ['x'] }],
    ['an external $ref', { $ref: 'https://example.com/schema.json' }],
    ['false', false],
  ]
  for (const [what, schema] of unsupported) {
    const err = await rejectsWith(t, withSchema(schema), 'ERR_UNSUPPORTED', what)
    t.is(err?.details?.param, 'format', `${what}: names format`)
  }
  const bad: Array<[string, unknown]> = [
    ['an unknown type', { type: 'bogus' }],
    ['properties not an object', { type: 'object', properties: 3 }],
    ['a negative maxLength', { type: 'string', maxLength: -1 }],
    ['a $ref to no definition', { $ref: '#/$defs/nothing' }],
  ]
  for (const [what, schema] of bad) await rejectsWith(t, withSchema(schema), 'ERR_BAD_REQUEST', what)
  await rejectsWith(
    t,
    backend.chat({ model: TINY_MODEL_NAME, messages, format: { type: 'xml' } as never }),
    'ERR_BAD_REQUEST',
    'a format that is not json',
  )

  const defs = await backend.chat({
    model: TINY_MODEL_NAME,
    messages,
    format: {
      type: 'json',
      schema: {
        type: 'object',
        properties: { a: { $ref: '#/definitions/short' }, b: { $ref: '#/$defs/short' } },
        $defs: { short: { type: 'string', maxLength: 2 } },
      },
    },
    options: GREEDY,
  })
  const value = JSON.parse(defs.text) as { a: string; b: string }
  t.ok(value.a.length <= 2 && value.b.length <= 2, `$defs followed: ${JSON.stringify(defs.text)}`)

  const err = await rejectsWith(
    t,
    backend.chat({ model: TINY_MODEL_NAME, messages, logprobs: 2 }),
    'ERR_UNSUPPORTED',
    'logprobs',
  )
  t.is(err?.details?.param, 'logprobs', 'LlamaChat gives no token probabilities')
})
