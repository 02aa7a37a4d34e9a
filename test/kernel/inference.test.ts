import test from 'brittle'
import type { MeshError } from '../../kernel/errors.js'
import { MAX_JSON_DEPTH, parseInferRequest } from '../../kernel/inference.js'

const messages = [{ role: 'user', content: 'hi' }]

/** `{ type: 'array', items: { ... } }` nested `levels` deep (the innermost `{ type: 'string' }`). */
function nested(levels: number): Record<string, unknown> {
  let schema: Record<string, unknown> = { type: 'string' }
  for (let i = 1; i < levels; i++) schema = { type: 'array', items: schema }
  return schema
}

/** The error `fn` throws, or null. */
function errorOf(fn: () => unknown): MeshError | null {
  try {
    fn()
    return null
  } catch (err) {
    return err as MeshError
  }
}

test('inference request: the format schema counts against maxPromptBytes, for chat and generate', (t) => {
  const schema = { type: 'object', description: 'x'.repeat(2000) }
  const size = Buffer.byteLength(JSON.stringify(schema))
  const chat = { kind: 'chat', model: 'm', messages, format: { type: 'json', schema } }
  const generate = { kind: 'generate', model: 'm', prompt: 'hi', format: { type: 'json', schema } }
  for (const req of [chat, generate]) {
    const err = errorOf(() => parseInferRequest(req, 1000))
    t.is(err?.code, 'ERR_PAYLOAD_TOO_LARGE', `${req.kind}: refused`)
    t.ok(Number(err?.details?.size) > size, `${req.kind}: the schema counted`)
    t.is(
      errorOf(() => parseInferRequest(req, size + 100)),
      null,
      `${req.kind}: admitted under the limit`,
    )
  }
})

test('inference request: a schema, tool parameters or call arguments nested too deep are ERR_BAD_REQUEST naming the field', (t) => {
  const deep = nested(20_000)
  const cases: Array<[Record<string, unknown>, string]> = [
    [{ kind: 'chat', model: 'm', messages, format: { type: 'json', schema: deep } }, 'request.format.schema'],
    [
      { kind: 'generate', model: 'm', prompt: 'hi', format: { type: 'json', schema: deep } },
      'request.format.schema',
    ],
    [
      {
        kind: 'chat',
        model: 'm',
        messages,
        tools: [
          { type: 'function', function: { name: 'a' } },
          { type: 'function', function: { name: 'b', parameters: deep } },
        ],
      },
      'request.tools[1].function.parameters',
    ],
    [
      {
        kind: 'chat',
        model: 'm',
        messages: [{ role: 'assistant', content: '', toolCalls: [{ id: 'c', name: 'f', arguments: deep }] }],
      },
      'request.messages[0].toolCalls[0].arguments',
    ],
  ]
  for (const [req, field] of cases) {
    const err = errorOf(() => parseInferRequest(req, 10_000_000))
    t.is(err?.code, 'ERR_BAD_REQUEST', field)
    t.ok(err?.message.includes(field), `the message names ${field}`)
  }
  const deepest = {
    kind: 'chat',
    model: 'm',
    messages,
    format: { type: 'json', schema: nested(MAX_JSON_DEPTH) },
  }
  t.is(
    errorOf(() => parseInferRequest(deepest, 10_000_000)),
    null,
    `${MAX_JSON_DEPTH} levels are admitted`,
  )
  const over = { ...deepest, format: { type: 'json', schema: nested(MAX_JSON_DEPTH + 1) } }
  t.is(errorOf(() => parseInferRequest(over, 10_000_000))?.code, 'ERR_BAD_REQUEST', 'one more is not')
})
