/** From wire requests to what a model reads: the chat history, its chat template, and its token count. */
import {
  type ChatHistoryItem,
  type ChatModelFunctions,
  type ChatWrapper,
  JinjaTemplateChatWrapper,
  type LlamaModel,
  resolveChatWrapper,
} from 'node-llama-cpp'
import { isRecord } from '../../../kernel/util.js'

/** The history of a templated `generate`: the system text when given, the prompt, the model's turn. */
export function promptHistory(prompt: string, system: string | null | undefined): ChatHistoryItem[] {
  const history: ChatHistoryItem[] = []
  if (system) history.push({ type: 'system', text: system })
  history.push({ type: 'user', text: prompt }, { type: 'model', response: [] })
  return history
}

/**
 * The model's own Jinja chat template when node-llama-cpp accepts it, else
 * node-llama-cpp's pick. `resolveChatWrapper` only swaps in a specialised
 * wrapper that renders exactly like the template, but finding out blocks the
 * event loop for about a second on a template that matches none (the tiny
 * model's); building the Jinja wrapper directly gives the same prompt at a
 * fraction of that. The constructor throws on a template that drops a role.
 */
export function chatWrapperFor(model: LlamaModel): ChatWrapper {
  const tokenizer: unknown = model.fileInfo.metadata.tokenizer
  const template = isRecord(tokenizer) ? tokenizer.chat_template : undefined
  if (typeof template === 'string' && template.trim() !== '') {
    try {
      return new JinjaTemplateChatWrapper({ template, tokenizer: model.tokenizer })
    } catch {
      // Unusable template: node-llama-cpp's resolution picks a wrapper from the model's family.
    }
  }
  return resolveChatWrapper(model, { warningLogs: false })
}

/**
 * Tokens of the history as the wrapper renders it for the model (with the
 * functions it is offered, which the wrapper describes to it). Counted
 * whole, even when a cached prefix spares evaluating part of it: that is what
 * usage is charged on. No more than the context is ever evaluated.
 */
export function chatPromptTokens(
  model: LlamaModel,
  wrapper: ChatWrapper,
  history: ChatHistoryItem[],
  contextSize: number,
  functions?: ChatModelFunctions,
): number {
  const rendered = wrapper.generateContextState({
    chatHistory: history,
    ...(functions ? { availableFunctions: functions, documentFunctionParams: true } : {}),
  }).contextText
  return Math.min(contextSize, rendered.tokenize(model.tokenizer).length)
}

/** Tokens of a raw prompt, with the BOS the model prepends; no more than the context. */
export function rawPromptTokens(model: LlamaModel, prompt: string, contextSize: number): number {
  const bos = model.tokens.shouldPrependBosToken && model.tokens.bos !== null ? 1 : 0
  return Math.min(contextSize, model.tokenize(prompt).length + bos)
}
