/**
 * Text cut to what a context can hold before it is tokenized. The context
 * would keep no more of a longer text anyway, but tokenizing it whole runs on
 * the event loop: a 1 MiB prompt blocked it for seconds on the tiny model, so
 * status answers and every other request on the processor waited behind one
 * user's prompt (test/facilities/backends/llamacpp: "a prompt far longer than
 * the context does not block the event loop").
 */
import type { ChatHistoryItem, ChatModelResponse, LlamaModel } from 'node-llama-cpp'
import { isRecord } from '../../../kernel/util.js'

/** The longest token of a model's vocabulary in characters (from its GGUF), or Infinity when unknown. */
export function longestTokenChars(model: LlamaModel): number {
  const metadata: unknown = model.fileInfo.metadata
  const tokenizer = isRecord(metadata) ? metadata.tokenizer : undefined
  const ggml = isRecord(tokenizer) ? tokenizer.ggml : undefined
  const tokens = isRecord(ggml) ? ggml.tokens : undefined
  if (!Array.isArray(tokens) || tokens.length === 0) return Number.POSITIVE_INFINITY
  let longest = 1
  for (const t of tokens) if (typeof t === 'string' && t.length > longest) longest = t.length
  return longest
}

/** `text` cut to its last `max` characters (never starting inside a surrogate pair). */
export function tailOf(text: string, max: number): string {
  if (text.length <= max) return text
  let start = text.length - max
  const code = text.charCodeAt(start)
  if (code >= 0xdc00 && code <= 0xdfff) start++
  return text.slice(start)
}

/** `text` cut to its first `max` characters (never ending inside a surrogate pair). */
export function headOf(text: string, max: number): string {
  if (text.length <= max) return text
  const code = text.charCodeAt(max - 1)
  return text.slice(0, code >= 0xd800 && code <= 0xdbff ? max - 1 : max)
}

/** A model turn's item (text, reasoning, or a call and its result) cut to `maxChars`, or itself when it fits. */
function itemWithin(
  item: ChatModelResponse['response'][number],
  maxChars: number,
): ChatModelResponse['response'][number] {
  if (typeof item === 'string') return tailOf(item, maxChars)
  if (item.type === 'segment') return { ...item, text: tailOf(item.text, maxChars) }
  // A tool's result: its text, or its JSON once written out, when longer than the context holds.
  const result = typeof item.result === 'string' ? item.result : JSON.stringify(item.result ?? null)
  return result.length <= maxChars ? item : { ...item, result: tailOf(result, maxChars) }
}

/** The longest text of a model turn's item (a result counted as its JSON). */
function itemChars(item: ChatModelResponse['response'][number]): number {
  if (typeof item === 'string') return item.length
  if (item.type === 'segment') return item.text.length
  return typeof item.result === 'string' ? item.result.length : JSON.stringify(item.result ?? null).length
}

/** A history whose every text fits what the context can hold (`maxChars`, its last part). */
export function withinContext(history: ChatHistoryItem[], maxChars: number): ChatHistoryItem[] {
  const fits = (t: unknown) => typeof t !== 'string' || t.length <= maxChars
  const ok = history.every((h) =>
    h.type === 'model' ? h.response.every((r) => itemChars(r) <= maxChars) : fits(h.text),
  )
  if (ok) return history
  return history.map((h): ChatHistoryItem => {
    if (h.type === 'model') return { ...h, response: h.response.map((r) => itemWithin(r, maxChars)) }
    if (h.type === 'user') return { ...h, text: tailOf(h.text, maxChars) }
    return typeof h.text === 'string' ? { ...h, text: tailOf(h.text, maxChars) } : h
  })
}
