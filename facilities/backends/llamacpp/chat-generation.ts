/**
 * A chat on one context sequence through LlamaChat, shaped by the answer plan
 * (answer-shape.ts): free text, JSON under a grammar, one call forced by a grammar, or text
 * and calls through node-llama-cpp's function calling; reasoning kept apart from the text.
 */
import {
  type ChatHistoryItem,
  type ChatModelFunctions,
  type ChatWrapper,
  type LLamaChatGenerateResponseOptions,
  LlamaChat,
  type LlamaChatResponseChunk,
  LlamaText,
} from 'node-llama-cpp'
import type { ToolCall } from '../../../kernel/wire.js'
import { type AnswerPlan, thinkingBudget, wantsThinking } from './answer-shape.js'
import type { GenerationHooks, Producer, RawOutput } from './generation.js'
import type { GrammarCache } from './grammars.js'
import type { LoadedModel } from './loaded-models.js'
import { chatPromptTokens } from './prompting.js'
import { type SamplingPlan, samplingOptions } from './sampling.js'
import { withinContext } from './text-limits.js'
import { parseForcedCall, toToolCall, withCallInstructions } from './tool-calls.js'

type ChatOptions = LLamaChatGenerateResponseOptions<ChatModelFunctions>

/** What a chat gathers besides the text: reasoning, tool calls, tokens the text did not count. */
class AnswerParts {
  thinking = ''
  readonly toolCalls: ToolCall[] = []
  /** Tokens of reasoning and of calls made through function calling (not in `onToken`). */
  otherTokens = 0

  constructor(
    private readonly plan: AnswerPlan,
    private readonly hooks: GenerationHooks,
  ) {}

  /** Reasoning pieces: kept (and streamed) when asked for, counted either way. */
  onResponseChunk = (chunk: LlamaChatResponseChunk): void => {
    if (chunk.type !== 'segment') return
    this.otherTokens += chunk.tokens.length
    if (chunk.segmentType !== 'thought' || !wantsThinking(this.plan.think) || chunk.text === '') return
    this.thinking += chunk.text
    this.hooks.onDelta?.({ thinking: chunk.text })
  }

  /** A call through function calling, with a new id, streamed as it finishes. */
  addCall(call: ToolCall): void {
    this.toolCalls.push(call)
    this.hooks.onDelta?.({ toolCalls: [call] })
  }

  /** The reasoning for the result: only when not streamed (deltas carried it) and asked for. */
  resultThinking(): { thinking?: string } {
    return this.thinking !== '' && !this.hooks.onDelta ? { thinking: this.thinking } : {}
  }
}

/** Whether `wrapper`'s template has segments (reasoning, comments): the chunks `AnswerParts` reads. */
function hasSegments(wrapper: ChatWrapper): boolean {
  const segments = wrapper.settings.segments
  return segments?.thought != null || segments?.comment != null
}

/** The grammar or functions of the plan, as LlamaChat options. */
async function shapeOptions(
  plan: AnswerPlan,
  lm: LoadedModel,
  grammars: GrammarCache,
  parts: AnswerParts,
): Promise<Partial<ChatOptions>> {
  if (plan.kind === 'json' || plan.kind === 'call') {
    return { grammar: await grammars.forSchema(plan.schema, plan.kind === 'json' ? 'format' : 'tools') }
  }
  if (plan.kind !== 'tools') return {}
  return {
    functions: plan.functions,
    documentFunctionParams: true,
    onFunctionCall: (fc) => {
      parts.addCall(toToolCall(fc.functionName, fc.params))
      parts.otherTokens += LlamaText.fromJSON(fc.raw).tokenize(lm.model.tokenizer).length
    },
    ...(plan.maxParallelCalls !== undefined ? { maxParallelFunctionCalls: plan.maxParallelCalls } : {}),
  }
}

/**
 * A forced call's output: the call, or (cut by `num_predict` or a stop string, so not JSON)
 * the raw text as the answer, streamed then as one piece since nothing of it was.
 */
function forcedCallOutput(response: string, stopReason: string, parts: AnswerParts, hooks: GenerationHooks) {
  const call = parseForcedCall(response.trim())
  if (call === null) {
    hooks.onTextChunk(response)
    return { response, stopReason }
  }
  parts.addCall(call)
  // A whole call was written: tokens left over went to the grammar's closing newlines.
  return { response: '', stopReason: stopReason === 'maxTokens' ? 'eogToken' : stopReason }
}

/** A chat over `history` through the model's chat template, shaped by `answer`. */
export function chatProducer(
  history: ChatHistoryItem[],
  plan: SamplingPlan,
  answer: AnswerPlan,
  contextSize: number,
  grammars: GrammarCache,
): Producer {
  return async (seq, lm, hooks): Promise<RawOutput> => {
    const budgets = thinkingBudget(answer.think, lm.chatWrapper, contextSize)
    const prepared = answer.kind === 'call' ? withCallInstructions(history, answer.tools) : history
    const fitted = withinContext(prepared, lm.maxInputChars)
    const functions = answer.kind === 'tools' ? answer.functions : undefined
    const promptTokens = chatPromptTokens(lm.model, lm.chatWrapper, fitted, contextSize, functions)
    const parts = new AnswerParts(answer, hooks)
    const shape = await shapeOptions(answer, lm, grammars, parts)
    const chat = new LlamaChat({
      contextSequence: seq,
      chatWrapper: lm.chatWrapper,
      autoDisposeSequence: false,
    })
    try {
      const res = await chat.generateResponse(fitted, {
        ...samplingOptions(plan, contextSize),
        ...shape,
        signal: hooks.signal,
        // A forced call's JSON is not text: it comes back as a call.
        ...(answer.kind === 'call' ? {} : { onTextChunk: hooks.onTextChunk }),
        onToken: hooks.onToken,
        // Only segments are read there; for a model without them the callback would only cost a
        // chunk object (and a copy of its tokens) per token.
        ...(hasSegments(lm.chatWrapper) ? { onResponseChunk: parts.onResponseChunk } : {}),
        ...(budgets ? { budgets } : {}),
        stopOnAbortSignal: true,
      } as ChatOptions)
      const out =
        answer.kind === 'call'
          ? forcedCallOutput(res.response, res.metadata.stopReason, parts, hooks)
          : { response: res.response, stopReason: res.metadata.stopReason }
      return {
        ...out,
        promptTokens,
        otherTokens: parts.otherTokens,
        ...(parts.toolCalls.length > 0 ? { toolCalls: parts.toolCalls } : {}),
        ...parts.resultThinking(),
      }
    } finally {
      chat.dispose({ disposeSequence: false })
    }
  }
}
