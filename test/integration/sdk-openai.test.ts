/**
 * The official `openai` client against a live mesh: tools (named, required, streamed, a second
 * turn), structured output (json_schema and the zod helper) and the Responses API, on the
 * llama.cpp model; json_schema and tools through the Ollama-backed model (what the Ollama-protocol
 * server received). Every response is checked against docs/openapi.json.
 */
import test, { type Test } from 'brittle'
import OpenAI from 'openai'
import { zodResponseFormat } from 'openai/helpers/zod'
import type { ChatCompletionTool } from 'openai/resources/chat/completions'
import { z } from 'zod'
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

const TOOL: ChatCompletionTool = {
  type: 'function',
  function: { name: 'pick_city', description: PICK_CITY_DESCRIPTION, parameters: PICK_CITY_PARAMS },
}
const ASK = [{ role: 'user' as const, content: 'abc' }]
/** The tiny model pads forced JSON with whitespace: room for a whole call or object. */
const CALL_TOKENS = 200
const SHORT = { max_tokens: 8, temperature: 0 }

async function chatTools(t: Test, client: OpenAI) {
  const named = await client.chat.completions.create({
    model: LLAMA_MODEL,
    messages: ASK,
    tools: [TOOL],
    tool_choice: { type: 'function', function: { name: 'pick_city' } },
    max_tokens: CALL_TOKENS,
  })
  const call = named.choices[0]?.message.tool_calls?.[0]
  t.is(
    named.choices[0]?.finish_reason,
    'tool_calls',
    `named tool: finish_reason tool_calls ${JSON.stringify(named.choices[0]?.message)}`,
  )
  t.is(call?.type === 'function' ? call.function.name : null, 'pick_city')
  const args = call?.type === 'function' ? parsed(call.function.arguments) : null
  t.alike(pickCityErrors(args), [], `named tool: arguments validate ${JSON.stringify(args)}`)

  const required = await client.chat.completions.create({
    model: LLAMA_MODEL,
    messages: ASK,
    tools: [TOOL],
    tool_choice: 'required',
    max_tokens: CALL_TOKENS,
  })
  const req = required.choices[0]?.message.tool_calls?.[0]
  t.is(required.choices[0]?.finish_reason, 'tool_calls', 'required: finish_reason tool_calls')
  t.alike(
    pickCityErrors(req?.type === 'function' ? parsed(req.function.arguments) : null),
    [],
    'required: valid',
  )

  const stream = client.chat.completions.stream({
    model: LLAMA_MODEL,
    messages: ASK,
    tools: [TOOL],
    tool_choice: { type: 'function', function: { name: 'pick_city' } },
    max_tokens: CALL_TOKENS,
    stream_options: { include_usage: true },
  })
  let usageChunks = 0
  stream.on('chunk', (c) => {
    if (c.usage) usageChunks++
  })
  const final = await stream.finalChatCompletion()
  const streamed = final.choices[0]?.message.tool_calls?.[0]
  t.is(final.choices[0]?.finish_reason, 'tool_calls', 'streamed: finish_reason tool_calls')
  const streamedArgs = streamed?.type === 'function' ? parsed(streamed.function.arguments) : null
  t.alike(pickCityErrors(streamedArgs), [], `streamed: arguments validate ${JSON.stringify(streamedArgs)}`)
  t.is(usageChunks, 1, 'streamed: one usage chunk (include_usage)')
  t.ok((final.usage?.completion_tokens ?? 0) > 0, 'streamed: usage counts tokens')
  return { call, final }
}

async function secondTurn(t: Test, client: OpenAI, first: OpenAI.ChatCompletion) {
  const message = first.choices[0]?.message
  const call = message?.tool_calls?.[0]
  if (!message || !call) return t.ok(false, 'no call to answer')
  // llama.cpp keeps a call and its result in the model's turn, and the tiny model writes nothing
  // more there; a user turn after the result gets its predictable text ('abc' → 'def…').
  const answer = await client.chat.completions.create({
    model: LLAMA_MODEL,
    messages: [
      ...ASK,
      { role: 'assistant', content: message.content ?? null, tool_calls: message.tool_calls ?? [] },
      { role: 'tool', tool_call_id: call.id, content: 'sunny' },
      ...ASK,
    ],
    tools: [TOOL],
    ...SHORT,
  })
  const choice = answer.choices[0]
  t.is(choice?.finish_reason, 'length', 'second turn: answered up to max_tokens')
  t.is(choice?.message.content, 'defghijk', 'second turn: the history was taken, the next turn answered')
}

async function chatStructured(t: Test, client: OpenAI) {
  const plain = await client.chat.completions.create({
    model: LLAMA_MODEL,
    messages: ASK,
    response_format: {
      type: 'json_schema',
      json_schema: { name: 'answer', schema: ANSWER_SCHEMA, strict: true },
    },
    max_tokens: CALL_TOKENS,
  })
  const content = plain.choices[0]?.message.content
  t.alike(answerErrors(parsed(content)), [], `json_schema: content validates ${content}`)

  const Answer = z.object({ answer: z.enum(['yes', 'no']), sure: z.boolean() })
  const viaZod = await client.chat.completions.parse({
    model: LLAMA_MODEL,
    messages: ASK,
    response_format: zodResponseFormat(Answer, 'answer'),
    max_tokens: CALL_TOKENS,
  })
  const object = viaZod.choices[0]?.message.parsed
  t.alike(answerErrors(object), [], `zodResponseFormat: parsed validates ${JSON.stringify(object)}`)
}

async function responses(t: Test, client: OpenAI) {
  const tools: OpenAI.Responses.FunctionTool[] = [
    {
      type: 'function',
      name: 'pick_city',
      description: PICK_CITY_DESCRIPTION,
      parameters: PICK_CITY_PARAMS,
      strict: true,
    },
  ]
  const called = await client.responses.create({
    model: LLAMA_MODEL,
    input: 'abc',
    tools,
    tool_choice: { type: 'function', name: 'pick_city' },
    max_output_tokens: CALL_TOKENS,
  })
  const call = called.output.find((o) => o.type === 'function_call')
  t.is(call?.type === 'function_call' ? call.name : null, 'pick_city', 'responses: a function_call item')
  const args = call?.type === 'function_call' ? parsed(call.arguments) : null
  t.alike(pickCityErrors(args), [], `responses: arguments validate ${JSON.stringify(args)}`)

  const format = { type: 'json_schema' as const, name: 'answer', schema: ANSWER_SCHEMA, strict: true }
  const structured = await client.responses.create({
    model: LLAMA_MODEL,
    input: 'abc',
    text: { format },
    max_output_tokens: CALL_TOKENS,
  })
  t.alike(
    answerErrors(parsed(structured.output_text)),
    [],
    `responses: output_text validates ${structured.output_text}`,
  )

  const stream = await client.responses.create({
    model: LLAMA_MODEL,
    input: 'abc',
    text: { format },
    max_output_tokens: CALL_TOKENS,
    stream: true,
  })
  const types = new Set<string>()
  let done: OpenAI.Responses.Response | null = null
  for await (const event of stream) {
    types.add(event.type)
    if (event.type === 'response.completed') done = event.response
  }
  t.ok(types.has('response.output_text.delta'), 'responses streamed: text deltas')
  t.is(done?.status, 'completed', 'responses streamed: completed')
  // The raw stream's final response has no `output_text` (the SDK adds that convenience only to
  // non-streamed answers): the text is read from the message item.
  const text = done?.output
    .flatMap((o) => (o.type === 'message' ? o.content : []))
    .map((c) => (c.type === 'output_text' ? c.text : ''))
    .join('')
  t.alike(answerErrors(parsed(text)), [], `responses streamed: validates ${text}`)
}

async function ollamaBacked(t: Test, client: OpenAI, mesh: SdkMesh) {
  const model = mesh.ollamaModel
  let mark = mesh.received.length
  const structured = await client.chat.completions.create({
    model,
    messages: ASK,
    response_format: { type: 'json_schema', json_schema: { name: 'answer', schema: ANSWER_SCHEMA } },
    max_tokens: CALL_TOKENS,
  })
  t.alike(
    mesh.generationsSince(mark)[0]?.format,
    ANSWER_SCHEMA,
    'ollama-backed: Ollama got format = the schema',
  )
  const content = structured.choices[0]?.message.content
  t.alike(answerErrors(parsed(content)), [], `ollama-backed json_schema: validates ${content}`)

  mark = mesh.received.length
  const auto = await client.chat.completions.create({
    model,
    messages: ASK,
    tools: [TOOL],
    tool_choice: 'auto',
    ...SHORT,
  })
  t.alike(
    mesh.generationsSince(mark)[0]?.tools,
    [TOOL],
    'ollama-backed: Ollama got the function tools as sent',
  )
  // The tiny model under `auto` writes its text (step 2: 'abc' → 'egik…'); a call would come back as tool_calls.
  t.is(auto.choices[0]?.message.content, 'egikmoqs', 'ollama-backed tools auto: the answer came back')

  mark = mesh.received.length
  const refused = await client.chat.completions
    .create({ model, messages: ASK, tools: [TOOL], tool_choice: 'required', ...SHORT })
    .then(
      () => null,
      (err: unknown) => err,
    )
  t.ok(refused instanceof OpenAI.BadRequestError, `tool_choice required on Ollama: 400 (${String(refused)})`)
  const error = refused instanceof OpenAI.APIError ? refused : null
  t.is(error?.code, 'err_unsupported', 'code err_unsupported')
  t.is(error?.param, 'tool_choice', 'param tool_choice')
  t.is(mesh.generationsSince(mark).length, 0, 'nothing reached Ollama')
}

test('sdk openai: tools, structured output and the Responses API on the llama.cpp model; json_schema and tools through Ollama', {
  timeout: 90_000,
}, async (t) => {
  const started = Date.now()
  const mesh: SdkMesh = await sdkMesh(t)
  const client = new OpenAI({
    baseURL: `${mesh.url}/v1`,
    apiKey: mesh.apiKey,
    fetch: mesh.fetch,
    maxRetries: 0,
  })
  const { final } = await chatTools(t, client)
  await secondTurn(t, client, final)
  await chatStructured(t, client)
  await responses(t, client)
  await ollamaBacked(t, client, mesh)
  t.comment(`${mesh.checked()} responses checked, ${Date.now() - started} ms`)
  t.alike(await mesh.documentedErrors(), [], 'every response as docs/openapi.json documents it')
})
