import test from 'brittle'
import { KEY, MODEL, ScriptedSource, serveGateway } from './scripted-source.js'

const user = (content: unknown) => [{ role: 'user', content }]

/** Each request field the mesh cannot honour, and the parameter its 400 names. */
const CASES: [string, Record<string, unknown>, string][] = [
  ['a previous response', { previous_response_id: 'resp_1' }, 'previous_response_id'],
  ['a conversation', { conversation: 'conv_1' }, 'conversation'],
  ['background', { background: true }, 'background'],
  ['a stored prompt', { prompt: { id: 'pmpt_1' } }, 'prompt'],
  ['include', { include: ['reasoning.encrypted_content'] }, 'include'],
  ['top_logprobs', { top_logprobs: 3 }, 'top_logprobs'],
  ['max_tool_calls', { max_tool_calls: 2 }, 'max_tool_calls'],
  ['truncation auto', { truncation: 'auto' }, 'truncation'],
  ['a verbosity', { text: { verbosity: 'low' } }, 'text.verbosity'],
  ['a built-in tool', { tools: [{ type: 'web_search' }] }, 'tools[0].type'],
  [
    'a built-in tool after a function',
    {
      tools: [
        { type: 'function', name: 'f', parameters: {} },
        { type: 'file_search', vector_store_ids: ['vs'] },
      ],
    },
    'tools[1].type',
  ],
  [
    'an allowed_tools choice',
    {
      tools: [{ type: 'function', name: 'f', parameters: {} }],
      tool_choice: { type: 'allowed_tools', mode: 'auto', tools: [{ type: 'function', name: 'f' }] },
    },
    'tool_choice',
  ],
  ['a text format of another type', { text: { format: { type: 'grammar' } } }, 'text.format.type'],
  ['a minimal effort', { reasoning: { effort: 'minimal' } }, 'reasoning.effort'],
  [
    'an image',
    { input: user([{ type: 'input_image', image_url: 'https://example.com/a.png', detail: 'auto' }]) },
    'input[0].content[0]',
  ],
  ['a file', { input: user([{ type: 'input_file', file_id: 'file_1' }]) }, 'input[0].content[0]'],
  ['an item reference', { input: [{ type: 'item_reference', id: 'msg_1' }] }, 'input[0].type'],
  [
    'a built-in tool call in the input',
    { input: [{ type: 'web_search_call', id: 'ws_1', status: 'completed' }] },
    'input[0].type',
  ],
  [
    'encrypted reasoning',
    { input: [{ type: 'reasoning', id: 'rs_1', summary: [], encrypted_content: 'gAAA' }] },
    'input[0].encrypted_content',
  ],
]

test('responses-api: every field the mesh cannot honour is a 400 err_unsupported naming it', async (t) => {
  const source = new ScriptedSource()
  const url = await serveGateway(t, source)
  for (const [what, fields, param] of CASES) {
    const res = await fetch(`${url}/v1/responses`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
      body: JSON.stringify({ model: MODEL, input: 'x', ...fields }),
    })
    const body = (await res.json()) as {
      error: { type: string; code: string; param: string; message: string }
    }
    t.is(res.status, 400, `${what}: 400`)
    t.alike(
      { type: body.error.type, code: body.error.code, param: body.error.param },
      { type: 'invalid_request_error', code: 'err_unsupported', param },
      `${what}: err_unsupported, param ${param} (${body.error.message})`,
    )
  }
  t.is(source.requests.length, 0, 'no request reached the source')
})
