/**
 * Tools on llama.cpp with the tiny model: a forced call (by name or `required`) comes back as
 * a call whose arguments are valid against the tool's parameters, whole and streamed; `auto`
 * offers the tools through node-llama-cpp's function calling (the tiny model answers in text,
 * its `call` variant calls after a '!'); a history with calls and their results goes on.
 */
import test from 'brittle'
import { TINY_MODEL_NAME } from '../../../../facilities/tiny-model/tiny-model.js'
import { parseInferRequest } from '../../../../kernel/inference.js'
import type { ChatMessage, ChatRequest, ToolDefinition } from '../../../../kernel/wire.js'
import { rejectsWith, thrown } from '../../../helpers/assert.js'
import { collected, GREEDY, STEP1_TEXT, tinyBackend, validates } from './tiny-backend.js'

const WEATHER: ToolDefinition = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The weather in a city',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string', maxLength: 8 }, unit: { enum: ['c', 'f'] } },
      required: ['city'],
    },
  },
}
const TIME: ToolDefinition = {
  type: 'function',
  function: {
    name: 'get_time',
    // Numbers as an enum: node-llama-cpp's number grammar allows 16-digit exponents, which the tiny model writes.
    parameters: {
      type: 'object',
      properties: { utc_offset: { enum: [-1, 0, 1] }, dst: { type: 'boolean' } },
    },
  },
}
const PING: ToolDefinition = { type: 'function', function: { name: 'ping' } }
const TOOLS = [WEATHER, TIME, PING]
const messages: ChatMessage[] = [{ role: 'user', content: 'abc' }]
const base: ChatRequest = { model: TINY_MODEL_NAME, messages, tools: TOOLS, options: GREEDY }

function paramsOf(name: string) {
  return TOOLS.find((tool) => tool.function.name === name)?.function.parameters ?? { type: 'object' }
}

test('llamacpp tools: a call forced by name or required is a valid call, whole and streamed', async (t) => {
  const backend = await tinyBackend(t)
  for (const toolChoice of [{ name: 'get_weather' }, { name: 'get_time' }, 'required'] as const) {
    const what = typeof toolChoice === 'string' ? toolChoice : toolChoice.name
    const r = await backend.chat({ ...base, toolChoice })
    t.is(r.toolCalls?.length, 1, `${what}: one call`)
    const call = r.toolCalls?.[0]
    if (!call) continue
    if (typeof toolChoice === 'object') t.is(call.name, toolChoice.name, `${what}: the named tool`)
    else
      t.ok(
        TOOLS.some((tool) => tool.function.name === call.name),
        `${what}: one of the tools (${call.name})`,
      )
    const check = validates(paramsOf(call.name), call.arguments)
    t.ok(check.ok, `${what}: arguments ${JSON.stringify(call.arguments)} valid ${check.errors}`)
    t.ok(/^call_[0-9a-f]{24}$/.test(call.id), `${what}: id ${call.id}`)
    t.is(r.text, '', `${what}: no text`)
    t.is(r.doneReason, 'stop')
    t.ok(r.completionTokens > 0, `${what}: the call's tokens count`)
  }

  const ping = await backend.chat({ ...base, toolChoice: { name: 'ping' } })
  t.alike(ping.toolCalls?.[0]?.arguments, {}, 'a tool without parameters is called with none')

  const { result, pieces, deltas } = await collected((cb) =>
    backend.chat({ ...base, toolChoice: { name: 'get_weather' } }, cb),
  )
  t.alike(pieces, [], 'streamed: no text pieces for the JSON')
  t.is(deltas.length, 1, 'one delta')
  t.alike(deltas[0]?.toolCalls, result.toolCalls, 'carrying the call the result has')
  t.is(result.toolCalls?.[0]?.name, 'get_weather')
})

test('llamacpp tools: a forced call cut by num_predict is returned as text with doneReason length', async (t) => {
  const backend = await tinyBackend(t)
  const req: ChatRequest = {
    ...base,
    toolChoice: { name: 'get_weather' },
    options: { ...GREEDY, num_predict: 5 },
  }
  const cut = await backend.chat(req)
  t.is(cut.doneReason, 'length')
  t.is(cut.toolCalls, undefined, 'no call: its JSON is unfinished')
  t.ok(cut.text.startsWith('{') && cut.text.length > 1, `the raw text: ${JSON.stringify(cut.text)}`)
  const { result, pieces, deltas } = await collected((cb) => backend.chat(req, cb))
  t.is(pieces.join(''), result.text, 'streamed: the raw text in one piece at the end')
  t.is(result.text, cut.text)
  t.alike(deltas, [])
})

test('llamacpp tools: auto offers them to the model, none does not', async (t) => {
  const backend = await tinyBackend(t)
  const plain = await backend.chat({ model: TINY_MODEL_NAME, messages, options: GREEDY })
  const auto = await backend.chat(base)
  t.is(auto.text, STEP1_TEXT, 'the tiny model answers in text')
  t.is(auto.toolCalls, undefined)
  t.ok(
    auto.promptTokens > plain.promptTokens + 100,
    `the tools are described in the prompt (${auto.promptTokens} tokens)`,
  )
  const one = await backend.chat({ ...base, parallelToolCalls: false })
  t.is(one.text, STEP1_TEXT, 'parallelToolCalls false')
  const none = await backend.chat({ ...base, toolChoice: 'none' })
  t.is(none.text, STEP1_TEXT)
  t.is(none.promptTokens, plain.promptTokens, 'none: the model is not told of them')

  const err = await rejectsWith(
    t,
    backend.chat({ ...base, format: { type: 'json' } }),
    'ERR_UNSUPPORTED',
    'format with tools',
  )
  t.is(err?.details?.param, 'format')
  const patterned: ToolDefinition = {
    type: 'function',
    function: {
      name: 'find',
      parameters: { type: 'object', properties: { q: { type: 'string', pattern: 'x' } } },
    },
  }
  const refused = await rejectsWith(
    t,
    backend.chat({ ...base, tools: [patterned] }),
    'ERR_UNSUPPORTED',
    'pattern',
  )
  t.is(refused?.details?.param, 'tools')
  const badChoices: Array<[string, ChatRequest]> = [
    ['unknown tool', { ...base, toolChoice: { name: 'nope' } }],
    ['required without tools', { ...base, tools: [], toolChoice: 'required' }],
  ]
  for (const [what, req] of badChoices) {
    const kernel = thrown(() => parseInferRequest({ kind: 'chat', ...req }, 1 << 20))
    const backends = await rejectsWith(t, backend.chat(req), 'ERR_BAD_REQUEST', what)
    t.is(backends?.message, kernel?.message, `${what}: the kernel's message (${kernel?.message})`)
    t.is(backends?.details?.param, 'tool_choice', `${what}: names tool_choice`)
  }
  await rejectsWith(
    t,
    backend.chat({ ...base, tools: [WEATHER, WEATHER] }),
    'ERR_BAD_REQUEST',
    'the same name twice',
  )
})

test('llamacpp tools: auto returns the calls node-llama-cpp parsed, and runs none of them', async (t) => {
  const backend = await tinyBackend(t, { caller: { call: true } })
  const req: ChatRequest = { ...base, model: 'caller', messages: [{ role: 'user', content: '!' }] }
  const { result, pieces, deltas } = await collected((cb) => backend.chat(req, cb))
  t.is(result.toolCalls?.length, 1, 'one call')
  const call = result.toolCalls?.[0]
  if (call) {
    t.ok(
      TOOLS.some((tool) => tool.function.name === call.name),
      `one of the tools: ${call.name}`,
    )
    const check = validates(paramsOf(call.name), call.arguments)
    t.ok(check.ok, `arguments ${JSON.stringify(call.arguments)} valid ${check.errors}`)
    t.ok(/^call_[0-9a-f]{24}$/.test(call.id), `id ${call.id}`)
  }
  t.is(result.text, '', 'no text around it')
  t.is(result.doneReason, 'stop')
  t.alike(pieces, [], 'streamed: no text pieces for the call syntax')
  t.alike(deltas, [{ toolCalls: result.toolCalls }], 'one delta with the call')
  t.ok(result.completionTokens > 1, `the call's tokens count (${result.completionTokens})`)

  const whole = await backend.chat({ ...req, parallelToolCalls: false })
  t.alike(
    whole.toolCalls?.map((c) => [c.name, c.arguments]),
    result.toolCalls?.map((c) => [c.name, c.arguments]),
    'whole: the same call (parallelToolCalls false)',
  )
  const none = await backend.chat({ ...req, toolChoice: 'none' })
  t.is(none.text, '||call:', 'none: the model is offered no functions, so its call syntax is only text')
  t.is(none.toolCalls, undefined)
})

/** A conversation where the model called get_weather and the tool answered `result`. */
function afterCall(result: string, then: ChatMessage[] = []): ChatMessage[] {
  return [
    { role: 'user', content: 'weather?' },
    {
      role: 'assistant',
      content: '',
      toolCalls: [{ id: 'call_1', name: 'get_weather', arguments: { city: 'Paris' } }],
    },
    { role: 'tool', content: result, toolCallId: 'call_1' },
    ...then,
  ]
}

test('llamacpp tools: a history with calls and their results goes on', async (t) => {
  const backend = await tinyBackend(t)
  const next = await backend.chat({ ...base, messages: afterCall('sunny', messages) })
  t.is(next.text, STEP1_TEXT, 'the next user turn is answered')
  const longer = await backend.chat({ ...base, messages: afterCall('sunny and warm', messages) })
  t.is(
    longer.promptTokens - next.promptTokens,
    ' and warm'.length,
    'the result is in the prompt, one token a character',
  )

  const goesOn = await backend.chat({ ...base, messages: afterCall('{"temp": 20}') })
  t.is(goesOn.doneReason, 'stop', 'after a result the model goes on with its turn')
  const forced = await backend.chat({
    ...base,
    messages: afterCall('sunny'),
    toolChoice: { name: 'get_time' },
  })
  t.is(forced.toolCalls?.[0]?.name, 'get_time', 'and may call again')
  const byName = await backend.chat({
    ...base,
    messages: [
      ...afterCall('sunny').slice(0, 2),
      { role: 'tool', content: 'sunny', toolName: 'get_weather' },
      ...messages,
    ],
  })
  t.is(byName.text, STEP1_TEXT, 'a result matched by tool name')

  await rejectsWith(
    t,
    backend.chat({ ...base, messages: [...afterCall('x').slice(0, 2), ...messages] }),
    'ERR_BAD_REQUEST',
    'a call without a result',
  )
  const stray = await backend.chat({ ...base, messages: [{ role: 'tool', content: 'abc' }] })
  t.is(stray.text, STEP1_TEXT, 'a tool message that answers no call is read as input')
})
