/**
 * What kind of answer a request asks of llama.cpp (`format`, `tools`, `toolChoice`, `think`),
 * checked before any model loads. node-llama-cpp constrains an answer with either a grammar or
 * its function calling, never both, and a grammar leaves a model no room to reason: those
 * combinations are refused with ERR_UNSUPPORTED rather than half honoured.
 */
import type { ChatModelFunctions, ChatWrapper, GbnfJsonSchema } from 'node-llama-cpp'
import { MeshError } from '../../../kernel/errors.js'
import { isRecord } from '../../../kernel/util.js'
import type { ChatRequest, GenerateRequest, ThinkSetting, ToolDefinition } from '../../../kernel/wire.js'
import { ANY_OBJECT, toGrammarSchema } from './json-schema.js'
import { checkToolChoice, checkTools, forcedCallSchema, toFunctions } from './tool-calls.js'

/** Free text, JSON of a schema, one forced tool call, or text and calls by node-llama-cpp's function calling. */
export type AnswerKind =
  | { kind: 'text' }
  | { kind: 'json'; schema: GbnfJsonSchema }
  | { kind: 'call'; schema: GbnfJsonSchema; tools: ToolDefinition[] }
  | { kind: 'tools'; functions: ChatModelFunctions; maxParallelCalls: number | undefined }

export type AnswerPlan = AnswerKind & { think: ThinkSetting | undefined }

const THINK_EFFORTS: ReadonlySet<unknown> = new Set([true, false, 'low', 'medium', 'high'])

/** @throws ERR_BAD_REQUEST unless `think` is absent, a boolean or an effort */
function checkThink(think: unknown): ThinkSetting | undefined {
  if (think === undefined || think === null) return undefined
  if (!THINK_EFFORTS.has(think))
    throw MeshError.badRequest("think must be a boolean or 'low', 'medium', 'high'")
  return think as ThinkSetting
}

/** The grammar schema of `format`, or undefined. @throws ERR_BAD_REQUEST, ERR_UNSUPPORTED naming `format` */
function checkFormat(format: unknown): GbnfJsonSchema | undefined {
  if (format === undefined || format === null) return undefined
  if (!isRecord(format) || format.type !== 'json') {
    throw MeshError.badRequest("format must be {type: 'json', schema?}", { param: 'format' })
  }
  return format.schema === undefined ? ANY_OBJECT : toGrammarSchema(format.schema, 'format')
}

/** Whether `think` asks for reasoning (an effort or true). */
export const wantsThinking = (think: ThinkSetting | undefined) => think !== undefined && think !== false

/** @throws ERR_UNSUPPORTED naming `think` when a grammar shapes the answer and reasoning is asked for */
function refuseThinkingUnder(think: ThinkSetting | undefined, what: string): void {
  if (wantsThinking(think)) {
    throw MeshError.unsupported(
      'think',
      `cannot be combined with ${what} on the llama.cpp backend (its grammar leaves no room to reason)`,
    )
  }
}

/** The answer a chat request asks for. @throws ERR_BAD_REQUEST, ERR_UNSUPPORTED */
export function planChatAnswer(req: ChatRequest): AnswerPlan {
  const think = checkThink(req.think)
  const schema = checkFormat(req.format)
  const tools = checkTools(req.tools)
  const choice = checkToolChoice(req.toolChoice, tools)
  if (tools.length > 0 && choice !== 'none') {
    if (schema) {
      throw MeshError.unsupported(
        'format',
        "cannot be combined with tools on the llama.cpp backend (unless tool_choice is 'none')",
      )
    }
    if (choice === 'auto') {
      const maxParallelCalls = req.parallelToolCalls === false ? 1 : undefined
      return { kind: 'tools', functions: toFunctions(tools), maxParallelCalls, think }
    }
    refuseThinkingUnder(think, 'a forced tool call')
    return { kind: 'call', schema: forcedCallSchema(tools, choice), tools, think }
  }
  if (schema) {
    refuseThinkingUnder(think, 'format')
    return { kind: 'json', schema, think }
  }
  return { kind: 'text', think }
}

/** The answer a generate request asks for; a raw prompt has no chat template to reason in. @throws like `planChatAnswer` */
export function planGenerateAnswer(req: GenerateRequest): AnswerPlan {
  const think = checkThink(req.think)
  const schema = checkFormat(req.format)
  if (req.raw === true && wantsThinking(think)) {
    throw MeshError.unsupported('think', 'needs the chat template, which a raw prompt goes without')
  }
  if (schema) {
    refuseThinkingUnder(think, 'format')
    return { kind: 'json', schema, think }
  }
  return { kind: 'text', think }
}

/**
 * node-llama-cpp's budgets for reasoning on `wrapper`: none when `think` is false, an eighth or
 * a quarter of the context for `low` and `medium`, its default otherwise.
 * @throws ERR_UNSUPPORTED naming `think` when reasoning is asked of a model whose chat template has no place for it
 */
export function thinkingBudget(
  think: ThinkSetting | undefined,
  wrapper: ChatWrapper,
  contextSize: number,
): { thoughtTokens: number } | undefined {
  const canThink = wrapper.settings.segments?.thought != null
  if (!wantsThinking(think)) return think === false && canThink ? { thoughtTokens: 0 } : undefined
  if (!canThink) {
    throw MeshError.unsupported(
      'think',
      'is not supported by this model: its chat template has no reasoning section',
    )
  }
  if (think === 'low') return { thoughtTokens: Math.floor(contextSize / 8) }
  if (think === 'medium') return { thoughtTokens: Math.floor(contextSize / 4) }
  return undefined
}
