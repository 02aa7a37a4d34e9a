/**
 * Frameworks against a live mesh: LangChain's ChatOpenAI and ChatOllama (tools bound, structured
 * output) and the Vercel AI SDK's OpenAI-compatible provider (generateObject, a forced tool call).
 * Every response is checked against docs/openapi.json.
 */
import { createOpenAICompatible } from '@ai-sdk/openai-compatible'
import { ChatOllama } from '@langchain/ollama'
import { ChatOpenAI } from '@langchain/openai'
import { generateObject, generateText, tool } from 'ai'
import test, { type Test } from 'brittle'
import { z } from 'zod'
import {
  answerErrors,
  CITIES,
  LLAMA_MODEL,
  PICK_CITY_DESCRIPTION,
  PICK_CITY_PARAMS,
  pickCityErrors,
  type SdkMesh,
  sdkMesh,
} from './sdk-mesh.js'

const TOOL = {
  type: 'function' as const,
  function: { name: 'pick_city', description: PICK_CITY_DESCRIPTION, parameters: PICK_CITY_PARAMS },
}
const Answer = z.object({ answer: z.enum(['yes', 'no']), sure: z.boolean() })
const PickCity = z.object({ city: z.enum(CITIES), metric: z.boolean() })
/** The tiny model pads forced JSON with whitespace: room for a whole call or object. */
const CALL_TOKENS = 200

async function chatOpenAI(t: Test, mesh: SdkMesh) {
  const base = { model: LLAMA_MODEL, apiKey: mesh.apiKey, maxRetries: 0, maxTokens: CALL_TOKENS }
  const chat = new ChatOpenAI({ ...base, configuration: { baseURL: `${mesh.url}/v1`, fetch: mesh.fetch } })
  const called = await chat.bindTools([TOOL], { tool_choice: 'pick_city' }).invoke('abc')
  const call = called.tool_calls?.[0]
  t.is(call?.name, 'pick_city', 'ChatOpenAI bindTools: a tool call')
  t.alike(pickCityErrors(call?.args), [], `ChatOpenAI bindTools: args validate ${JSON.stringify(call?.args)}`)

  // The default method for a model not named gpt-3*/gpt-4 is jsonSchema (response_format
  // json_schema); functionCalling forces a call of a tool named after the schema.
  const byDefault = await chat.withStructuredOutput(Answer).invoke('abc')
  t.alike(
    answerErrors(byDefault),
    [],
    `ChatOpenAI withStructuredOutput: validates ${JSON.stringify(byDefault)}`,
  )
  const byCall = await chat.withStructuredOutput(Answer, { method: 'functionCalling' }).invoke('abc')
  t.alike(answerErrors(byCall), [], `ChatOpenAI functionCalling: validates ${JSON.stringify(byCall)}`)
}

async function chatOllama(t: Test, mesh: SdkMesh) {
  const headers = { Authorization: `Bearer ${mesh.apiKey}` }
  const on = (model: string, numPredict: number) =>
    new ChatOllama({ model, baseUrl: mesh.url, headers, fetch: mesh.fetch, temperature: 0, numPredict })

  let mark = mesh.received.length
  const llama = await on(LLAMA_MODEL, 8).bindTools([TOOL]).invoke('abc')
  // The tiny model under `auto` writes its text ('abc' → 'def…'): a tool-bound chat model answers.
  t.is(llama.content, 'defghijk', 'ChatOllama bindTools on llama.cpp: answered')
  const viaOllama = await on(mesh.ollamaModel, 8).bindTools([TOOL]).invoke('abc')
  t.is(viaOllama.content, 'egikmoqs', 'ChatOllama bindTools on the Ollama-backed model: answered')
  const [toolsBody] = mesh.generationsSince(mark)
  t.alike(toolsBody?.tools, [TOOL], 'ChatOllama bindTools: the tools reached Ollama as bound')

  const object = await on(LLAMA_MODEL, CALL_TOKENS).withStructuredOutput(Answer).invoke('abc')
  t.alike(answerErrors(object), [], `ChatOllama withStructuredOutput: validates ${JSON.stringify(object)}`)
  mark = mesh.received.length
  const viaFormat = await on(mesh.ollamaModel, CALL_TOKENS).withStructuredOutput(Answer).invoke('abc')
  t.alike(
    answerErrors(viaFormat),
    [],
    `ChatOllama withStructuredOutput via Ollama: validates ${JSON.stringify(viaFormat)}`,
  )
  const format = mesh.generationsSince(mark)[0]?.format as Record<string, unknown> | undefined
  t.alike(
    { properties: format?.properties, required: format?.required },
    { properties: Answer.toJSONSchema().properties, required: ['answer', 'sure'] },
    'ChatOllama withStructuredOutput (method jsonSchema): Ollama got the schema as `format`',
  )
}

async function vercel(t: Test, mesh: SdkMesh) {
  const provider = createOpenAICompatible({
    name: 'mesh',
    baseURL: `${mesh.url}/v1`,
    apiKey: mesh.apiKey,
    supportsStructuredOutputs: true,
    fetch: mesh.fetch,
  })
  const model = provider(LLAMA_MODEL)
  const { object } = await generateObject({
    model,
    prompt: 'abc',
    schema: Answer,
    maxOutputTokens: CALL_TOKENS,
    maxRetries: 0,
  })
  t.alike(answerErrors(object), [], `AI SDK generateObject: validates ${JSON.stringify(object)}`)

  const { toolCalls, finishReason } = await generateText({
    model,
    prompt: 'abc',
    tools: { pick_city: tool({ description: PICK_CITY_DESCRIPTION, inputSchema: PickCity }) },
    toolChoice: { type: 'tool', toolName: 'pick_city' },
    maxOutputTokens: CALL_TOKENS,
    maxRetries: 0,
  })
  t.is(finishReason, 'tool-calls', 'AI SDK generateText: finishReason tool-calls')
  t.is(toolCalls[0]?.toolName, 'pick_city', 'AI SDK generateText: the named tool, returned (no execute)')
  t.alike(
    pickCityErrors(toolCalls[0]?.input),
    [],
    `AI SDK: input validates ${JSON.stringify(toolCalls[0]?.input)}`,
  )
}

test('sdk frameworks: LangChain (ChatOpenAI, ChatOllama) and the Vercel AI SDK', {
  timeout: 90_000,
}, async (t) => {
  const started = Date.now()
  const mesh = await sdkMesh(t)
  await chatOpenAI(t, mesh)
  await chatOllama(t, mesh)
  await vercel(t, mesh)
  t.comment(`${mesh.checked()} responses checked, ${Date.now() - started} ms`)
  t.alike(await mesh.documentedErrors(), [], 'every response as docs/openapi.json documents it')
})
