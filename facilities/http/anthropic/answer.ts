/**
 * Anthropic's answer: a message whose content is blocks (thinking, text, tool_use), built the
 * same way whole and streamed. `MessageBlocks` adds each part of the answer as it comes and
 * returns the stream's frames for it (content_block_start / _delta / _stop), so the streamed
 * events and the message they add up to never differ.
 */
import type { DoneReason, GenerationResult, ToolCall } from '../../../kernel/wire.js'
import { namedEvent } from '../sse.js'

export type ContentBlock =
  | { type: 'text'; text: string }
  | { type: 'thinking'; thinking: string; signature: string }
  | { type: 'tool_use'; id: string; name: string; input: Record<string, unknown> }

export type StopReason = 'end_turn' | 'max_tokens' | 'tool_use'

/**
 * Why the answer ended. A generation cut by one of `stop_sequences` reads as `end_turn`:
 * the backends do not say which stop string (if any) ended it, so `stop_sequence` is never
 * reported.
 */
export function stopReasonOf(doneReason: DoneReason, toolCalls: ToolCall[] | undefined): StopReason {
  if (toolCalls?.length) return 'tool_use'
  return doneReason === 'length' ? 'max_tokens' : 'end_turn'
}

/** The answer's content blocks, and the stream's frames as each part is added. */
export class MessageBlocks {
  readonly content: ContentBlock[] = []
  /** The kind of the last block while it may still grow. */
  private open: 'text' | 'thinking' | null = null
  /** Ids of the tool calls added. */
  private readonly calls = new Set<string>()

  /** @param showThinking whether reasoning is shown (`thinking.display` not `omitted`) */
  constructor(private readonly showThinking: boolean) {}

  private get index(): number {
    return this.content.length - 1
  }

  /** Ends the open block, if any. */
  close(): string {
    if (this.open === null) return ''
    this.open = null
    return namedEvent('content_block_stop', { type: 'content_block_stop', index: this.index })
  }

  /** Starts `block` (after ending the open one), its start event announcing it empty. */
  private start(block: ContentBlock, announced: ContentBlock): string {
    const frames = this.close()
    this.content.push(block)
    return (
      frames +
      namedEvent('content_block_start', {
        type: 'content_block_start',
        index: this.index,
        content_block: announced,
      })
    )
  }

  private delta(delta: Record<string, unknown>): string {
    return namedEvent('content_block_delta', { type: 'content_block_delta', index: this.index, delta })
  }

  /** A piece of the answer's text. */
  text(text: string): string {
    if (text === '') return ''
    let frames = ''
    if (this.open !== 'text') {
      frames = this.start({ type: 'text', text: '' }, { type: 'text', text: '' })
      this.open = 'text'
    }
    const block = this.content[this.index] as { text: string }
    block.text += text
    return frames + this.delta({ type: 'text_delta', text })
  }

  /** A piece of reasoning. */
  thinking(text: string): string {
    if (text === '' || !this.showThinking) return ''
    let frames = ''
    if (this.open !== 'thinking') {
      const empty = (): ContentBlock => ({ type: 'thinking', thinking: '', signature: '' })
      frames = this.start(empty(), empty())
      this.open = 'thinking'
    }
    const block = this.content[this.index] as { thinking: string }
    block.thinking += text
    return frames + this.delta({ type: 'thinking_delta', thinking: text })
  }

  /** A finished tool call, whole: its block's start, its input as one JSON delta, its end. */
  toolCall(call: ToolCall): string {
    if (this.calls.has(call.id)) return ''
    this.calls.add(call.id)
    const frames = this.start(
      { type: 'tool_use', id: call.id, name: call.name, input: call.arguments },
      { type: 'tool_use', id: call.id, name: call.name, input: {} },
    )
    return (
      frames +
      this.delta({ type: 'input_json_delta', partial_json: JSON.stringify(call.arguments) }) +
      namedEvent('content_block_stop', { type: 'content_block_stop', index: this.index })
    )
  }

  /** Adds the parts of a whole result: reasoning, text, then tool calls (frames unused). */
  addWhole(result: GenerationResult): void {
    if (result.thinking) this.thinking(result.thinking)
    this.text(result.text)
    this.close()
    for (const call of result.toolCalls ?? []) this.toolCall(call)
  }

  /** The frames that end a stream: the open block, calls no delta carried, then the message's end. */
  finish(result: GenerationResult): string {
    let frames = this.close()
    for (const call of result.toolCalls ?? []) frames += this.toolCall(call)
    const stopReason = stopReasonOf(result.doneReason, result.toolCalls)
    return (
      frames +
      namedEvent('message_delta', {
        type: 'message_delta',
        delta: { stop_reason: stopReason, stop_sequence: null },
        usage: { input_tokens: result.promptTokens, output_tokens: result.completionTokens },
      }) +
      namedEvent('message_stop', { type: 'message_stop' })
    )
  }
}

/** The message object of an answer (its content so far, for a stream's start). */
export function messageObject(
  id: string,
  model: string,
  content: ContentBlock[],
  result: GenerationResult | null,
) {
  return {
    id,
    type: 'message',
    role: 'assistant',
    model,
    content,
    stop_reason: result ? stopReasonOf(result.doneReason, result.toolCalls) : null,
    stop_sequence: null,
    usage: { input_tokens: result?.promptTokens ?? 0, output_tokens: result?.completionTokens ?? 0 },
  }
}
