/**
 * docs/openapi.json: a valid OpenAPI 3.1 document whose `$ref`s all resolve, documenting
 * exactly the routes the HTTP code serves (and the routes being added for issue 19), with
 * schemas that refuse wrong shapes: the checker used against live gateways can fail.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Validator } from '@seriousme/openapi-schema-validator'
import test from 'brittle'
import { MESSAGES_PATH } from '../../facilities/http/anthropic-api.js'
import { PROBE_PATHS } from '../../facilities/http/health-routes.js'
import { createRouteTable } from '../../facilities/http/ollama/routes.js'
import { RESPONSES_PATH } from '../../facilities/http/responses-api.js'
import { gatewayConfigSchema, parseConfig } from '../../kernel/config.js'
import { loadDocument, METHODS, OPENAPI_FILE, openapi, unresolvedRefs } from '../helpers/openapi.js'

const REPO = fileURLToPath(new URL('../../../', import.meta.url))
/** The `/v1/…` paths named in the OpenAI layer's source, a trailing-slash prefix as `{param}`. */
function openAIPathsInCode(): Set<string> {
  const dir = join(REPO, 'facilities/http')
  const files = readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter(
    (f) => f.endsWith('.ts') && (f === 'openai-api.ts' || f.startsWith('openai/')),
  )
  const found = new Set<string>()
  for (const f of files) {
    for (const m of readFileSync(join(dir, f), 'utf8').matchAll(/'(\/v1\/[\w\-/.]*)'/g)) {
      const path = m[1] as string
      if (path === '/v1/') continue
      found.add(path.endsWith('/') ? `${path}{id}` : path)
    }
  }
  return found
}

test('openapi: a valid OpenAPI 3.1 document, every $ref resolving', async (t) => {
  const validator = new Validator()
  const result = await validator.validate(OPENAPI_FILE)
  t.ok(result.valid, `valid OpenAPI: ${JSON.stringify(result.errors ?? []).slice(0, 2000)}`)
  t.is(validator.version, '3.1', 'OpenAPI 3.1')
  const doc = loadDocument()
  t.alike(unresolvedRefs(doc), [], 'every $ref resolves')
  t.alike(unresolvedRefs({ ...doc, x: { $ref: '#/components/schemas/Nope' } }), ['#/components/schemas/Nope'])
  const { host, port } = parseConfig(gatewayConfigSchema, { bootstrap: 'public' }).http
  t.is(
    (doc.servers as { url: string }[])[0]?.url,
    `http://${host}:${port}`,
    "the example server: the gateway's default http host and port",
  )
})

test('openapi: the documented paths are the routed ones', async (t) => {
  const doc = loadDocument()
  const paths = doc.paths as Record<string, Record<string, unknown>>
  const documented = new Set(Object.keys(paths))
  const routed = new Set<string>([
    ...PROBE_PATHS,
    '/metrics',
    MESSAGES_PATH,
    RESPONSES_PATH,
    ...openAIPathsInCode(),
  ])
  for (const [path, route] of createRouteTable('0.0.0')) {
    routed.add(path)
    const item = paths[path]
    const methods = item ? METHODS.filter((m) => m !== 'options' && item[m] !== undefined) : []
    const expected = [
      ...(route.GET ? ['get', 'head'] : []),
      ...(route.POST ? ['post'] : []),
      ...(route.DELETE ? ['delete'] : []),
    ]
    t.alike(methods.sort(), expected.sort(), `${path}: the methods the Ollama route table answers`)
  }
  t.ok(
    routed.has('/v1/chat/completions') && routed.has('/v1/models/{id}'),
    'the OpenAI paths are found in the code',
  )
  for (const path of routed) t.ok(documented.has(path), `routed ${path} is documented`)
  for (const path of documented) {
    t.ok(routed.has(path), `documented ${path} is routed`)
  }
  for (const [path, item] of Object.entries(paths)) {
    t.ok(item.options !== undefined, `${path}: its CORS preflight`)
    t.ok(item['x-llm-mesh-method-not-allowed'] !== undefined, `${path}: its 405`)
  }
})

const chatCompletion = {
  id: 'chatcmpl-1',
  object: 'chat.completion',
  created: 1,
  model: 'echo',
  choices: [
    {
      index: 0,
      message: {
        role: 'assistant',
        content: null,
        tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: '{}' } }],
      },
      logprobs: null,
      finish_reason: 'tool_calls',
    },
  ],
  usage: { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 },
}

test('openapi: a wrong shape fails the check', async (t) => {
  const c = openapi()
  const check = (path: string, status: number, body: unknown, type = 'application/json') =>
    c.checkResponse('POST', path, status, type, JSON.stringify(body))
  t.alike(check('/v1/chat/completions', 200, chatCompletion), [], 'a tool-call answer passes')
  const { choices: _, ...noChoices } = chatCompletion
  const missing = check('/v1/chat/completions', 200, noChoices)
  t.ok(
    missing.length === 1 && missing[0]?.includes("required property 'choices'"),
    `missing choices: fails, naming it (${missing.join('; ')})`,
  )
  const badReason = { ...chatCompletion, choices: [{ ...chatCompletion.choices[0], finish_reason: 'done' }] }
  t.ok(check('/v1/chat/completions', 200, badReason).length > 0, 'a finish_reason not in the enum: fails')
  t.ok(
    check('/v1/chat/completions', 200, { ...chatCompletion, object: 'chat.completion.chunk' }).length > 0,
    'wrong object',
  )
  t.ok(
    check('/v1/chat/completions', 400, { error: 'bad' }).length > 0,
    "Ollama's error on an OpenAI path: fails",
  )
  t.alike(check('/api/chat', 400, { error: 'bad' }), [], "Ollama's error on an Ollama path passes")
  t.ok(
    check('/v1/chat/completions', 200, chatCompletion, 'text/html').length > 0,
    'an undocumented content type',
  )
  const conflict = {
    error: { message: 'm', type: 'invalid_request_error', param: null, code: 'err_conflict' },
  }
  t.alike(check('/v1/chat/completions', 409, conflict), [], 'a status not listed falls to the default error')
  t.ok(
    c.checkResponse('DELETE', '/api/chat', 200, 'application/json', '{}').length > 0,
    'a method never answered 200',
  )
  t.ok(
    c.checkResponse('GET', '/api/tags', 200, 'application/json', 'not json').length > 0,
    'a body that is not JSON',
  )
  const ndjson = (lines: unknown[]) => lines.map((l) => `${JSON.stringify(l)}\n`).join('')
  const piece = {
    model: 'echo',
    created_at: '2026-01-01T00:00:00.000Z',
    message: { role: 'assistant', content: 'a' },
    done: false,
  }
  const last = { ...piece, message: { role: 'assistant', content: '' }, done: true, done_reason: 'stop' }
  t.alike(
    c.checkResponse('POST', '/api/chat', 200, 'application/x-ndjson', ndjson([piece, last])),
    [],
    'an Ollama stream passes',
  )
  const noReason = { ...last, done_reason: undefined }
  t.ok(
    c.checkResponse('POST', '/api/chat', 200, 'application/x-ndjson', ndjson([piece, noReason])).length > 0,
    'a last line without done_reason fails',
  )
  t.ok(
    c.checkResponse(
      'POST',
      '/api/chat',
      200,
      'application/x-ndjson',
      ndjson([{ ...piece, created_at: 'yesterday' }]),
    ).length > 0,
    'created_at not a date-time fails',
  )
  t.ok(c.checkStreamFrame('/v1/chat/completions', '[DONE]').length === 0, '[DONE] is a frame')
  t.ok(
    c.checkStreamFrame('/v1/chat/completions', { ...chatCompletion, object: 'chat.completion.chunk' })
      .length > 0,
    'a chunk with a message instead of a delta fails',
  )
})

/** Anthropic's own examples (a message, a streamed one), as its docs show them. */
const anthropicMessage = {
  id: 'msg_1',
  type: 'message',
  role: 'assistant',
  content: [
    { type: 'thinking', thinking: 'Let me see.', signature: 'sig' },
    { type: 'text', text: 'Hi' },
    { type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: { city: 'Paris' } },
  ],
  model: 'echo',
  stop_reason: 'tool_use',
  stop_sequence: null,
  usage: { input_tokens: 10, output_tokens: 5 },
}
const anthropicStream = [
  [
    'message_start',
    { type: 'message_start', message: { ...anthropicMessage, content: [], stop_reason: null } },
  ],
  [
    'content_block_start',
    { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } },
  ],
  ['ping', { type: 'ping' }],
  [
    'content_block_delta',
    { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'Hi' } },
  ],
  ['content_block_stop', { type: 'content_block_stop', index: 0 }],
  [
    'message_delta',
    {
      type: 'message_delta',
      delta: { stop_reason: 'end_turn', stop_sequence: null },
      usage: { output_tokens: 1 },
    },
  ],
  ['message_stop', { type: 'message_stop' }],
] as const
const sse = (events: readonly (readonly [string, unknown])[]) =>
  events.map(([e, d]) => `event: ${e}\ndata: ${JSON.stringify(d)}\n\n`).join('')

const response = {
  id: 'resp_1',
  object: 'response',
  created_at: 1,
  status: 'completed',
  model: 'echo',
  output: [
    { type: 'reasoning', id: 'rs_1', summary: [] },
    {
      type: 'message',
      id: 'msg_1',
      status: 'completed',
      role: 'assistant',
      content: [{ type: 'output_text', text: 'Hi', annotations: [] }],
    },
    {
      type: 'function_call',
      id: 'fc_1',
      call_id: 'call_1',
      name: 'f',
      arguments: '{"a":1}',
      status: 'completed',
    },
  ],
  error: null,
  incomplete_details: null,
  usage: { input_tokens: 1, output_tokens: 2, total_tokens: 3 },
}

test('openapi: the new dialects (documented from the official APIs; live checks after the merge)', async (t) => {
  const c = openapi()
  const check = (path: string, status: number, type: string, body: string) =>
    c.checkResponse('POST', path, status, type, body)
  t.alike(
    check('/v1/messages', 200, 'application/json', JSON.stringify(anthropicMessage)),
    [],
    'an Anthropic message passes',
  )
  t.ok(
    check(
      '/v1/messages',
      200,
      'application/json',
      JSON.stringify({ ...anthropicMessage, stop_reason: 'stop' }),
    ).length > 0,
    'stop_reason not in the enum fails',
  )
  t.alike(
    check('/v1/messages', 200, 'text/event-stream', sse(anthropicStream)),
    [],
    'an Anthropic stream passes',
  )
  const renamed = anthropicStream.map(([e, d]) => [e === 'ping' ? 'pong' : e, d] as const)
  t.ok(
    check('/v1/messages', 200, 'text/event-stream', sse(renamed)).length > 0,
    'an event named unlike its type fails',
  )
  const noDelta = [['content_block_delta', { type: 'content_block_delta', index: 0 }]] as const
  t.ok(
    check('/v1/messages', 200, 'text/event-stream', sse(noDelta)).length > 0,
    'a delta event without its delta fails',
  )
  const anthropicError = { type: 'error', error: { type: 'authentication_error', message: 'no key' } }
  t.alike(
    check('/v1/messages', 401, 'application/json', JSON.stringify(anthropicError)),
    [],
    "Anthropic's error passes",
  )
  t.ok(
    check(
      '/v1/messages',
      401,
      'application/json',
      JSON.stringify({ error: { message: 'm', type: 't', param: null, code: null } }),
    ).length > 0,
    "OpenAI's error on /v1/messages fails",
  )

  t.alike(
    check('/v1/responses', 200, 'application/json', JSON.stringify(response)),
    [],
    'a Responses answer passes',
  )
  t.ok(
    check(
      '/v1/responses',
      200,
      'application/json',
      JSON.stringify({ ...response, object: 'chat.completion' }),
    ).length > 0,
    'wrong object fails',
  )
  const events: [string, unknown][] = [
    [
      'response.created',
      {
        type: 'response.created',
        sequence_number: 0,
        response: { ...response, status: 'in_progress', output: [] },
      },
    ],
    [
      'response.output_text.delta',
      {
        type: 'response.output_text.delta',
        sequence_number: 1,
        item_id: 'msg_1',
        output_index: 0,
        content_index: 0,
        delta: 'Hi',
      },
    ],
    ['response.completed', { type: 'response.completed', sequence_number: 2, response }],
  ]
  t.alike(check('/v1/responses', 200, 'text/event-stream', sse(events)), [], 'a Responses stream passes')
  const noText: [string, unknown][] = [
    ['response.output_text.delta', { type: 'response.output_text.delta', item_id: 'm', output_index: 0 }],
  ]
  t.ok(
    check('/v1/responses', 200, 'text/event-stream', sse(noText)).length > 0,
    'a text delta without its delta fails',
  )
})
