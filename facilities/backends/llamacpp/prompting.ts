/** From wire requests to what a model reads: the chat history, its chat template, and its token count. */
import {
  type ChatHistoryItem,
  type ChatWrapper,
  JinjaTemplateChatWrapper,
  type LlamaModel,
  resolveChatWrapper,
} from 'node-llama-cpp'
import { MeshError } from '../../../kernel/errors.js'
import { isRecord } from '../../../kernel/util.js'
import type { ChatMessage } from '../../../kernel/wire.js'

const ROLES: ReadonlySet<string> = new Set(['system', 'user', 'assistant', 'tool'])

/** Maps wire messages to node-llama-cpp's history, ending with the model turn to generate. @throws ERR_BAD_REQUEST */
export function toChatHistory(messages: unknown): ChatHistoryItem[] {
  if (!Array.isArray(messages) || messages.length === 0) {
    throw MeshError.badRequest('messages must be a non-empty array')
  }
  const history: ChatHistoryItem[] = []
  messages.forEach((m: unknown, i) => {
    if (!isRecord(m)) throw MeshError.badRequest(`messages[${i}] must be an object`)
    const { role, content } = m as Partial<ChatMessage>
    if (typeof role !== 'string' || !ROLES.has(role)) {
      throw MeshError.badRequest(`messages[${i}].role must be one of ${[...ROLES].join(', ')}`)
    }
    if (typeof content !== 'string') throw MeshError.badRequest(`messages[${i}].content must be a string`)
    if (role === 'system') history.push({ type: 'system', text: content })
    else if (role === 'assistant') history.push({ type: 'model', response: [content] })
    // node-llama-cpp has no tool-result turn outside its own function calling; the model reads it as input.
    else history.push({ type: 'user', text: content })
  })
  // A trailing assistant message is a prefix to continue, as in Ollama.
  if (history[history.length - 1]?.type !== 'model') history.push({ type: 'model', response: [] })
  return history
}

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
 * Tokens of the history as the wrapper renders it for the model. Counted
 * whole, even when a cached prefix spares evaluating part of it: that is what
 * usage is charged on. No more than the context is ever evaluated.
 */
export function chatPromptTokens(
  model: LlamaModel,
  wrapper: ChatWrapper,
  history: ChatHistoryItem[],
  contextSize: number,
): number {
  const rendered = wrapper.generateContextState({ chatHistory: history }).contextText
  return Math.min(contextSize, rendered.tokenize(model.tokenizer).length)
}

/** Tokens of a raw prompt, with the BOS the model prepends; no more than the context. */
export function rawPromptTokens(model: LlamaModel, prompt: string, contextSize: number): number {
  const bos = model.tokens.shouldPrependBosToken && model.tokens.bos !== null ? 1 : 0
  return Math.min(contextSize, model.tokenize(prompt).length + bos)
}
