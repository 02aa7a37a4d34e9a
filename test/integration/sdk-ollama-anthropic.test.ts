/**
 * The official `ollama` and `@anthropic-ai/sdk` clients against a live mesh: structured output and
 * tools on the llama.cpp model, and the same fields through the Ollama-backed model, where the
 * Ollama-protocol server must receive them intact. Every response is checked against docs/openapi.json.
 */
import Anthropic from '@anthropic-ai/sdk'
import test, { type Test } from 'brittle'
import { Ollama } from 'ollama'
import {
  ANSWER_SCHEMA,
  answerErrors,
  LLAMA_MODEL,
  PICK_CITY_DESCRIPTION,
  PICK_CITY_PARAMS,
  parsed,
  pickCityErrors,
  type SdkMesh,
  sdkMesh,
} from './sdk-mesh.js'

const TOOL = {
  type: 'function',
  function: { name: 'pick_city', description: PICK_CITY_DESCRIPTION, parameters: PICK_CITY_PARAMS },
}
const ASK = [{ role: 'user' as const, content: 'abc' }]
/** The tiny model pads forced JSON with whitespace: room for a whole call or object. */
const CALL_TOKENS = 200
const GREEDY_8 = { temperature: 0, num_predict: 8 }

async function ollamaClient(t: Test, mesh: SdkMesh) {
  const client = new Ollama({
    host: mesh.url,
    headers: { Authorization: `Bearer ${mesh.apiKey}` },
    fetch: mesh.fetch,
  })
  const structured = await client.chat({
    model: LLAMA_MODEL,
    messages: ASK,
    format: ANSWER_SCHEMA,
    options: { num_predict: CALL_TOKENS },
  })
  const content = structured.message.content
  t.alike(answerErrors(parsed(content)), [], `ollama format: content validates ${content}`)

  let mark = mesh.received.length
  const tooled = await client.chat({ model: LLAMA_MODEL, messages: ASK, tools: [TOOL], options: GREEDY_8 })
  // Under `auto` the tiny model writes its text ('abc' → 'def…'): a tool-bound chat is answered.
  t.is(tooled.message.content, 'defghijk', 'ollama tools (auto) on llama.cpp: answered')
  t.is(mesh.generationsSince(mark).length, 0, 'the llama.cpp model: nothing at the Ollama server')

  const model = mesh.ollamaModel
  mark = mesh.received.length
  // The llama.cpp engine behind refuses `format` with tools (one grammar or functions): one each.
  const viaFormat = await client.chat({
    model,
    messages: ASK,
    format: ANSWER_SCHEMA,
    think: false,
    options: { num_predict: CALL_TOKENS },
  })
  const viaTools = await client.chat({ model, messages: ASK, tools: [TOOL], think: false, options: GREEDY_8 })
  const [formatBody, toolsBody] = mesh.generationsSince(mark)
  t.alike(formatBody?.format, ANSWER_SCHEMA, 'ollama-backed: format intact at the server')
  t.is(formatBody?.think, false, 'ollama-backed: think false intact')
  t.alike(toolsBody?.tools, [TOOL], 'ollama-backed: tools intact at the server')
  t.is(toolsBody?.think, false, 'ollama-backed: think false intact with tools')
  t.alike(
    answerErrors(parsed(viaFormat.message.content)),
    [],
    `ollama-backed format: validates ${viaFormat.message.content}`,
  )
  t.is(viaTools.message.content, 'egikmoqs', 'ollama-backed tools: the answer came back')
}

// This @anthropic-ai/sdk's types have no `temperature`: none is sent, and the tiny model's text is
// the same at any temperature (the next letter leads every other token by more than 25 logits).
const ANTHROPIC_TOOL: Anthropic.Tool = {
  name: 'pick_city',
  description: PICK_CITY_DESCRIPTION,
  input_schema: PICK_CITY_PARAMS as Anthropic.Tool.InputSchema,
}

async function anthropicTools(t: Test, client: Anthropic) {
  const forced = {
    model: LLAMA_MODEL,
    max_tokens: CALL_TOKENS,
    messages: ASK,
    tools: [ANTHROPIC_TOOL],
    tool_choice: { type: 'tool' as const, name: 'pick_city' },
  }
  const whole = await client.messages.create(forced)
  const use = whole.content.find((b) => b.type === 'tool_use')
  t.is(whole.stop_reason, 'tool_use', 'anthropic: stop_reason tool_use')
  t.is(use?.name, 'pick_city', 'anthropic: a tool_use block')
  t.alike(pickCityErrors(use?.input), [], `anthropic: input validates ${JSON.stringify(use?.input)}`)

  const final = await client.messages.stream(forced).finalMessage()
  const streamed = final.content.find((b) => b.type === 'tool_use')
  t.is(final.stop_reason, 'tool_use', 'anthropic streamed: stop_reason tool_use')
  t.alike(
    pickCityErrors(streamed?.input),
    [],
    `anthropic streamed: input validates ${JSON.stringify(streamed?.input)}`,
  )
  if (!use) return
  // The tool result, then text in the same user turn: the next turn is the tiny model's predictable text.
  const next = await client.messages.create({
    model: LLAMA_MODEL,
    max_tokens: 8,
    tools: [ANTHROPIC_TOOL],
    messages: [
      ...ASK,
      { role: 'assistant', content: whole.content },
      {
        role: 'user',
        content: [
          { type: 'tool_result', tool_use_id: use.id, content: 'sunny' },
          { type: 'text', text: 'abc' },
        ],
      },
    ],
  })
  t.is(next.stop_reason, 'max_tokens', 'anthropic follow-up: answered up to max_tokens')
  t.alike(
    next.content,
    [{ type: 'text', text: 'defghijk' }],
    'anthropic follow-up: the tool_result was taken',
  )
}

async function anthropicOllamaBacked(t: Test, client: Anthropic, mesh: SdkMesh) {
  const model = mesh.ollamaModel
  const mark = mesh.received.length
  const structured = await client.messages.create({
    model,
    max_tokens: CALL_TOKENS,
    messages: ASK,
    output_config: { format: { type: 'json_schema', schema: ANSWER_SCHEMA } },
  })
  const tooled = await client.messages.create({
    model,
    max_tokens: 8,
    messages: ASK,
    tools: [ANTHROPIC_TOOL],
  })
  const [formatBody, toolsBody] = mesh.generationsSince(mark)
  t.alike(formatBody?.format, ANSWER_SCHEMA, 'anthropic ollama-backed: output_config.format → format intact')
  t.alike(toolsBody?.tools, [TOOL], 'anthropic ollama-backed: tools → function tools intact')
  const text = structured.content.map((b) => (b.type === 'text' ? b.text : '')).join('')
  t.alike(answerErrors(parsed(text)), [], `anthropic ollama-backed: text validates ${text}`)
  t.alike(tooled.content, [{ type: 'text', text: 'egikmoqs' }], 'anthropic ollama-backed tools: answered')
}

test('sdk ollama + anthropic: format and tools on llama.cpp and through Ollama', {
  timeout: 90_000,
}, async (t) => {
  const started = Date.now()
  const mesh = await sdkMesh(t)
  await ollamaClient(t, mesh)
  const anthropic = new Anthropic({
    apiKey: mesh.apiKey,
    baseURL: mesh.url,
    fetch: mesh.fetch,
    maxRetries: 0,
  })
  await anthropicTools(t, anthropic)
  await anthropicOllamaBacked(t, anthropic, mesh)
  t.comment(`${mesh.checked()} responses checked, ${Date.now() - started} ms`)
  t.alike(await mesh.documentedErrors(), [], 'every response as docs/openapi.json documents it')
})
