import test from 'brittle'
import { KEY, MODEL, ScriptedSource, serveGateway } from './scripted-source.js'

const user = (content: unknown) => [{ role: 'user', content }]
const IMAGE = { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } }

/** Each request field the mesh cannot honour, and the parameter its 400 names. */
const CASES: [string, Record<string, unknown>, string][] = [
  [
    'an image block',
    { messages: user([{ type: 'text', text: 'what is it?' }, IMAGE]) },
    'messages[0].content[1]',
  ],
  [
    'a document block',
    { messages: user([{ type: 'document', source: { type: 'text', media_type: 'text/plain', data: 'x' } }]) },
    'messages[0].content[0]',
  ],
  ['an image in the system prompt', { system: [IMAGE], messages: user('x') }, 'system[0]'],
  [
    'a redacted thinking block',
    {
      messages: [
        { role: 'user', content: 'x' },
        { role: 'assistant', content: [{ type: 'redacted_thinking', data: 'abc' }] },
        { role: 'user', content: 'y' },
      ],
    },
    'messages[1].content[0]',
  ],
  [
    'an image in a tool result',
    {
      messages: [
        { role: 'user', content: 'x' },
        { role: 'assistant', content: [{ type: 'tool_use', id: 't1', name: 'shot', input: {} }] },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: 't1', content: [IMAGE] }] },
      ],
    },
    'messages[2].content[0].content[0]',
  ],
  [
    'a server tool',
    { tools: [{ type: 'web_search_20250305', name: 'web_search', max_uses: 3 }], messages: user('x') },
    'tools[0].type',
  ],
  ['thinking between tools', { thinking: { type: 'between_tools' }, messages: user('x') }, 'thinking.type'],
  [
    'an effort beyond high',
    { thinking: { type: 'adaptive' }, output_config: { effort: 'max' }, messages: user('x') },
    'output_config.effort',
  ],
  [
    'an effort without thinking',
    { output_config: { effort: 'low' }, messages: user('x') },
    'output_config.effort',
  ],
  [
    'an output format not a JSON schema',
    { output_config: { format: { type: 'xml' } }, messages: user('x') },
    'output_config.format.type',
  ],
  ['a container', { container: 'container_1', messages: user('x') }, 'container'],
  [
    'MCP servers',
    { mcp_servers: [{ type: 'url', url: 'https://example.com/mcp', name: 'x' }], messages: user('x') },
    'mcp_servers',
  ],
  ['context management', { context_management: { edits: [] }, messages: user('x') }, 'context_management'],
]

test('anthropic-api: every field the mesh cannot honour is a 400 naming it, and never reaches the source', async (t) => {
  const source = new ScriptedSource()
  const url = await serveGateway(t, source)
  for (const [what, fields, param] of CASES) {
    const res = await fetch(`${url}/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': KEY },
      body: JSON.stringify({ model: MODEL, max_tokens: 5, ...fields }),
    })
    const body = (await res.json()) as { type: string; error: { type: string; message: string } }
    t.is(res.status, 400, `${what}: 400`)
    t.is(body.error.type, 'invalid_request_error', `${what}: invalid_request_error`)
    t.ok(body.error.message.startsWith(`${param} `), `${what}: names ${param} (${body.error.message})`)
  }
  t.is(source.requests.length, 0, 'no request reached the source')
})
