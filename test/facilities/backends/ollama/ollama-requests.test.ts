/** The Ollama backend's requests: what it refuses before asking Ollama anything. */
import test from 'brittle'
import { chatRequest } from '../../../../facilities/backends/ollama/requests.js'
import { MeshError } from '../../../../kernel/errors.js'
import type { ChatRequest, ToolDefinition } from '../../../../kernel/wire.js'

const WEATHER: ToolDefinition = {
  type: 'function',
  function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } },
}
const chat = (tools: ToolDefinition[], more: Partial<ChatRequest> = {}): ChatRequest => ({
  model: 'm',
  messages: [{ role: 'user', content: 'hi' }],
  tools,
  ...more,
})
const strict = (t: ToolDefinition, on: boolean): ToolDefinition => ({
  ...t,
  function: { ...t.function, strict: on },
})

test('ollama backend: a tool asking for strict is refused (ERR_UNSUPPORTED tools.strict); strict false is not sent', (t) => {
  for (const more of [{}, { toolChoice: 'none' as const }]) {
    try {
      chatRequest('m', chat([WEATHER, strict({ ...WEATHER, function: { name: 'get_time' } }, true)], more))
      t.fail('strict was taken')
    } catch (err) {
      const e = MeshError.from(err)
      t.alike(
        [e.code, e.details?.param, e.reason],
        [
          'ERR_UNSUPPORTED',
          'tools.strict',
          "tools.strict is not supported by the ollama backend: Ollama does not hold calls to the schema (tool 'get_time')",
        ],
        `refused, tool_choice ${more.toolChoice ?? 'auto'}`,
      )
    }
  }
  t.alike(
    chatRequest('m', chat([strict(WEATHER, false)])).tools,
    [WEATHER],
    'strict false asks for nothing: Ollama gets the tool without it',
  )
  t.alike(chatRequest('m', chat([WEATHER])).tools, [WEATHER], 'a tool without strict as it is')
})
