/**
 * Tools on llama.cpp. Two ways, by `toolChoice`:
 * - `auto`: node-llama-cpp's own function calling (`functions`), in whatever call syntax the
 *   model's chat wrapper knows (node-llama-cpp's default one when its template has none).
 *   Nothing runs the functions: LlamaChat stops at the calls and they go back to the caller.
 * - `required` or `{name}`: a grammar that lets the model write nothing but one call,
 *   `{"name": …, "arguments": …}`, its arguments valid against that tool's parameters. Any
 *   model can be made to call a tool this way. One call per answer, `parallelToolCalls` or not.
 * `none` offers the model no tools.
 */
import type { ChatHistoryItem, ChatModelFunctions, GbnfJsonSchema } from 'node-llama-cpp'
import { MeshError } from '../../../kernel/errors.js'
import { checkToolChoice as checkNamedTool } from '../../../kernel/inference.js'
import { isRecord, jsonObjectOf, newHexToolCallId } from '../../../kernel/util.js'
import type { ToolCall, ToolChoice, ToolDefinition } from '../../../kernel/wire.js'
import { toGrammarSchema } from './json-schema.js'

/** @throws ERR_BAD_REQUEST unless `tools` is a list of function definitions with distinct names */
export function checkTools(tools: unknown): ToolDefinition[] {
  if (tools === undefined || tools === null) return []
  if (!Array.isArray(tools)) throw MeshError.badRequest('tools must be a list', { param: 'tools' })
  const names = new Set<string>()
  tools.forEach((t: unknown, i) => {
    const fn = isRecord(t) ? t.function : undefined
    if (
      !isRecord(t) ||
      t.type !== 'function' ||
      !isRecord(fn) ||
      typeof fn.name !== 'string' ||
      fn.name === ''
    ) {
      throw MeshError.badRequest(`tools[${i}] must be {type: 'function', function: {name, …}}`, {
        param: 'tools',
      })
    }
    if (names.has(fn.name))
      throw MeshError.badRequest(`tools: '${fn.name}' is defined twice`, { param: 'tools' })
    names.add(fn.name)
  })
  return tools as ToolDefinition[]
}

/**
 * The choice's shape checked here (the kernel's request schema checks it before a gateway or
 * processor calls a backend), what it names by the kernel's check.
 * @throws ERR_BAD_REQUEST for a choice that is none of auto, none, required, {name} of a tool
 */
export function checkToolChoice(choice: unknown, tools: ToolDefinition[]): ToolChoice {
  if (choice === undefined || choice === null) return 'auto'
  let toolChoice: ToolChoice
  if (choice === 'auto' || choice === 'none' || choice === 'required') toolChoice = choice
  else if (isRecord(choice) && typeof choice.name === 'string') toolChoice = { name: choice.name }
  else {
    throw MeshError.badRequest("toolChoice must be 'auto', 'none', 'required' or {name}", {
      param: 'tool_choice',
    })
  }
  checkNamedTool({ toolChoice, tools })
  return toolChoice
}

/**
 * A tool's parameters in node-llama-cpp's dialect: an object schema (none: no arguments).
 * @throws ERR_BAD_REQUEST, ERR_UNSUPPORTED naming `tools`
 */
function parametersOf(tool: ToolDefinition, i: number): GbnfJsonSchema {
  const params = tool.function.parameters
  if (params === undefined || params === null) return { type: 'object', properties: {} }
  if (!isRecord(params) || (params.type !== undefined && params.type !== 'object')) {
    throw MeshError.badRequest(`tools[${i}].function.parameters must describe an object`, { param: 'tools' })
  }
  return toGrammarSchema({ ...params, type: 'object' }, 'tools')
}

/** The tools as node-llama-cpp's functions, for `auto`. @throws like `parametersOf` */
export function toFunctions(tools: ToolDefinition[]): ChatModelFunctions {
  const functions: Record<string, ChatModelFunctions[string]> = {}
  tools.forEach((tool, i) => {
    const { name, description } = tool.function
    functions[name] = { ...(description ? { description } : {}), params: parametersOf(tool, i) }
  })
  return functions
}

/**
 * The schema of the one call a forced choice allows: `{name, arguments}`, one branch per
 * allowed tool so the arguments match the name. @throws like `parametersOf`
 */
export function forcedCallSchema(
  tools: ToolDefinition[],
  choice: 'required' | { name: string },
): GbnfJsonSchema {
  const branches = tools.flatMap((tool, i): GbnfJsonSchema[] =>
    choice === 'required' || choice.name === tool.function.name
      ? [
          {
            type: 'object',
            properties: { name: { const: tool.function.name }, arguments: parametersOf(tool, i) },
          },
        ]
      : [],
  )
  return branches.length === 1 ? (branches[0] as GbnfJsonSchema) : { oneOf: branches }
}

/** What the model reads about the tools when it is made to call one: their names, descriptions and parameters. */
function forcedCallInstructions(tools: ToolDefinition[]): string {
  const lines = tools.map((t) => {
    const about = t.function.description ? `: ${t.function.description}` : ''
    return `- ${t.function.name}${about}\n  parameters: ${JSON.stringify(t.function.parameters ?? {})}`
  })
  return [
    'Call one of these functions. Answer with JSON only: {"name": <function>, "arguments": <its parameters>}.',
    ...lines,
  ].join('\n')
}

/** `history` with the forced call's instructions in its system message (one is added if it has none). */
export function withCallInstructions(history: ChatHistoryItem[], tools: ToolDefinition[]): ChatHistoryItem[] {
  const text = forcedCallInstructions(tools)
  const [first, ...rest] = history
  if (first?.type === 'system' && typeof first.text === 'string') {
    return [{ type: 'system', text: `${first.text}\n\n${text}` }, ...rest]
  }
  return [{ type: 'system', text }, ...history]
}

/** The call a forced answer holds, or null when it is not one (cut by `num_predict` or a stop string). */
export function parseForcedCall(text: string): ToolCall | null {
  const value = jsonObjectOf(text)
  if (!value || typeof value.name !== 'string' || !isRecord(value.arguments)) return null
  return { id: newHexToolCallId(), name: value.name, arguments: value.arguments }
}

/** A call node-llama-cpp parsed (`auto`), with a new id; a call without parameters has `{}`. */
export function toToolCall(functionName: string, params: unknown): ToolCall {
  return { id: newHexToolCallId(), name: functionName, arguments: isRecord(params) ? params : {} }
}
