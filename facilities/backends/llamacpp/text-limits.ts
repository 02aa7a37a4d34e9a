/**
 * Text cut to what a context can hold before it is tokenized. The context
 * would keep no more of a longer text anyway, but tokenizing it whole runs on
 * the event loop: a 1 MiB prompt blocked it for seconds on the tiny model, so
 * status answers and every other request on the processor waited behind one
 * user's prompt (test/facilities/backends/llamacpp: "a prompt far longer than
 * the context does not block the event loop").
 */
import type { ChatHistoryItem, LlamaModel } from 'node-llama-cpp'
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

/** A history whose every text fits what the context can hold (`maxChars`, its last part). */
export function withinContext(history: ChatHistoryItem[], maxChars: number): ChatHistoryItem[] {
  const fits = (t: unknown) => typeof t !== 'string' || t.length <= maxChars
  const ok = history.every((h) => (h.type === 'model' ? h.response.every(fits) : fits(h.text)))
  if (ok) return history
  return history.map((h): ChatHistoryItem => {
    if (h.type === 'model') {
      return { ...h, response: h.response.map((r) => (typeof r === 'string' ? tailOf(r, maxChars) : r)) }
    }
    if (h.type === 'user') return { ...h, text: tailOf(h.text, maxChars) }
    return typeof h.text === 'string' ? { ...h, text: tailOf(h.text, maxChars) } : h
  })
}
