/**
 * A tool's `strict` on the three dialects that have it: it reaches the wire, and a backend that
 * cannot honour it (the Ollama backend refuses `tools.strict`) is a 400 naming the caller's field.
 */
import Anthropic from '@anthropic-ai/sdk'
import test from 'brittle'
import OpenAI from 'openai'
import { MeshError } from '../../../kernel/errors.js'
import type { ToolDefinition } from '../../../kernel/wire.js'
import { CountedMetrics, KEY, MODEL, ScriptedSource, serveGateway } from './scripted-source.js'

const PARAMETERS = { type: 'object' as const, properties: { city: { type: 'string' } }, required: ['city'] }
const WIRE_TOOLS: ToolDefinition[] = [
  { type: 'function', function: { name: 'get_time', parameters: { type: 'object' } } },
  { type: 'function', function: { name: 'get_weather', parameters: PARAMETERS, strict: true } },
]
const WHY =
  "is not supported by the ollama backend: Ollama does not hold calls to the schema (tool 'get_weather')"
const REFUSAL = MeshError.unsupported('tools.strict', WHY)

test('tool strict: each dialect passes it to the wire; a backend refusing it is named as the caller named it', async (t) => {
  const source = new ScriptedSource()
  const url = await serveGateway(t, source, new CountedMetrics())
  const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: KEY, maxRetries: 0 })
  const anthropic = new Anthropic({ baseURL: url, apiKey: KEY, maxRetries: 0 })
  const user = [{ role: 'user' as const, content: 'weather?' }]
  const asks = {
    chat: () =>
      openai.chat.completions.create({
        model: MODEL,
        messages: user,
        tools: [
          { type: 'function', function: { name: 'get_time', parameters: { type: 'object' } } },
          { type: 'function', function: { name: 'get_weather', parameters: PARAMETERS, strict: true } },
        ],
      }),
    responses: () =>
      openai.responses.create({
        model: MODEL,
        input: 'weather?',
        tools: [
          { type: 'function', name: 'get_time', parameters: { type: 'object' }, strict: null },
          { type: 'function', name: 'get_weather', parameters: PARAMETERS, strict: true },
        ],
      }),
    messages: () =>
      anthropic.messages.create({
        model: MODEL,
        max_tokens: 5,
        messages: user,
        tools: [
          { name: 'get_time', input_schema: { type: 'object' } },
          { name: 'get_weather', input_schema: PARAMETERS, strict: true },
        ],
      }),
  }
  for (const [dialect, ask] of Object.entries(asks)) {
    source.script = { tokens: ['ok'] }
    await ask()
    t.alike(source.last?.tools, WIRE_TOOLS, `${dialect}: strict reaches the wire`)
  }

  source.script = { failBefore: REFUSAL }
  const chat = (await asks.chat().catch((e: unknown) => e)) as InstanceType<typeof OpenAI.APIError>
  t.alike(
    [chat.status, chat.param, chat.message],
    [400, 'tools[1].function.strict', `400 tools[1].function.strict ${WHY}`],
    'chat: the tool that asked, as OpenAI names its field',
  )
  const responses = (await asks.responses().catch((e: unknown) => e)) as InstanceType<typeof OpenAI.APIError>
  t.alike(
    [responses.status, responses.param, responses.message],
    [400, 'tools[1].strict', `400 tools[1].strict ${WHY}`],
    'responses: the tool that asked, as the Responses API names its field',
  )
  const messages = (await asks.messages().catch((e: unknown) => e)) as InstanceType<typeof Anthropic.APIError>
  t.alike(
    [messages.status, messages.error],
    [400, { type: 'error', error: { type: 'invalid_request_error', message: `tools[1].strict ${WHY}` } }],
    'messages: the tool that asked, as Anthropic names its field',
  )
})
