/**
 * OpenAI's Responses output: items (reasoning, message, function calls), built the same way
 * whole and streamed. `OutputItems` adds each part of the answer as it comes and returns the
 * stream's events for it (`response.output_item.added`, the part's deltas, `….done`), so the
 * streamed events and the response they add up to never differ.
 */
import type { GenerationResult, ToolCall } from '../../../kernel/wire.js'
import { namedEvent } from '../sse.js'

const TEXT_PART = { type: 'output_text', annotations: [], logprobs: [] } as const

type Reasoning = { type: 'reasoning'; id: string; summary: { type: 'summary_text'; text: string }[] }
type Message = {
  type: 'message'
  id: string
  status: 'in_progress' | 'completed' | 'incomplete'
  role: 'assistant'
  content: { type: 'output_text'; text: string; annotations: readonly never[]; logprobs: readonly never[] }[]
}

export type OutputItem =
  | Reasoning
  | Message
  | {
      type: 'function_call'
      id: string
      call_id: string
      name: string
      arguments: string
      status: 'in_progress' | 'completed'
    }

/** The answer's output items, and the stream's events as each part is added. */
export class OutputItems {
  readonly output: OutputItem[] = []
  /** The last item while it may still grow. */
  private open: 'reasoning' | 'message' | null = null
  /** The open item's one part (reasoning summary, or output text), whose text grows. */
  private part: { text: string } | null = null
  private readonly calls = new Set<string>()
  private sequence = 0

  /** @param rid the request's id, in every item's id */
  constructor(private readonly rid: string) {}

  /** One event, numbered. */
  event(type: string, fields: Record<string, unknown>): string {
    return namedEvent(type, { type, sequence_number: this.sequence++, ...fields })
  }

  private get index(): number {
    return this.output.length - 1
  }

  private add(item: OutputItem): string {
    const frames = this.close()
    this.output.push(item)
    return (
      frames +
      this.event('response.output_item.added', { output_index: this.index, item: structuredClone(item) })
    )
  }

  private where() {
    const item = this.output[this.index] as OutputItem
    return { item_id: item.id, output_index: this.index }
  }

  /** Ends the open item, if any, with its parts' `done` events. */
  close(status: 'completed' | 'incomplete' = 'completed'): string {
    const item = this.output[this.index]
    if (this.open === null || item === undefined) return ''
    this.open = null
    let frames = ''
    const part = this.part
    if (item.type === 'reasoning') {
      const at = { ...this.where(), summary_index: 0 }
      frames += this.event('response.reasoning_summary_text.done', { ...at, text: part?.text })
      frames += this.event('response.reasoning_summary_part.done', { ...at, part })
    } else if (item.type === 'message') {
      item.status = status
      const at = { ...this.where(), content_index: 0 }
      frames += this.event('response.output_text.done', { ...at, text: part?.text, logprobs: [] })
      frames += this.event('response.content_part.done', { ...at, part })
    }
    return frames + this.event('response.output_item.done', { output_index: this.index, item })
  }

  /** A piece of reasoning: the reasoning item's one summary part grows. */
  thinking(text: string): string {
    if (text === '') return ''
    let frames = ''
    if (this.open !== 'reasoning') {
      const item: Reasoning = { type: 'reasoning', id: `rs_${this.rid}_${this.output.length}`, summary: [] }
      frames = this.add(item)
      this.open = 'reasoning'
      const part = { type: 'summary_text' as const, text: '' }
      item.summary.push(part)
      this.part = part
      frames += this.event('response.reasoning_summary_part.added', {
        ...this.where(),
        summary_index: 0,
        part: { type: 'summary_text', text: '' },
      })
    }
    ;(this.part as { text: string }).text += text
    return (
      frames +
      this.event('response.reasoning_summary_text.delta', { ...this.where(), summary_index: 0, delta: text })
    )
  }

  /** A piece of the answer's text (the first piece, even empty, opens the message). */
  text(text: string): string {
    let frames = ''
    if (this.open !== 'message') {
      const id = `msg_${this.rid}_${this.output.length}`
      const item: Message = { type: 'message', id, status: 'in_progress', role: 'assistant', content: [] }
      frames = this.add(item)
      this.open = 'message'
      const part = { ...TEXT_PART, text: '' }
      item.content.push(part)
      this.part = part
      frames += this.event('response.content_part.added', {
        ...this.where(),
        content_index: 0,
        part: { ...TEXT_PART, text: '' },
      })
    }
    if (text === '') return frames
    ;(this.part as { text: string }).text += text
    return (
      frames +
      this.event('response.output_text.delta', {
        ...this.where(),
        content_index: 0,
        delta: text,
        logprobs: [],
      })
    )
  }

  /** A finished tool call, whole: its item, its arguments as one delta, its end. */
  toolCall(call: ToolCall): string {
    if (this.calls.has(call.id)) return ''
    this.calls.add(call.id)
    const args = JSON.stringify(call.arguments)
    const id = `fc_${this.rid}_${this.output.length}`
    let frames = this.add({
      type: 'function_call',
      id,
      call_id: call.id,
      name: call.name,
      arguments: '',
      status: 'in_progress',
    })
    const item = this.output[this.index] as Extract<OutputItem, { type: 'function_call' }>
    frames += this.event('response.function_call_arguments.delta', { ...this.where(), delta: args })
    frames += this.event('response.function_call_arguments.done', {
      ...this.where(),
      name: call.name,
      arguments: args,
    })
    item.arguments = args
    item.status = 'completed'
    return frames + this.event('response.output_item.done', { output_index: this.index, item })
  }

  /**
   * Ends the output: the open item, calls no delta carried, and a message (empty) when the
   * answer has neither text nor calls.
   */
  finish(result: GenerationResult): string {
    const status = result.doneReason === 'length' ? 'incomplete' : 'completed'
    let frames = this.close(status)
    for (const call of result.toolCalls ?? []) frames += this.toolCall(call)
    if (!this.output.some((it) => it.type !== 'reasoning')) frames += this.text('') + this.close(status)
    return frames
  }

  /** Adds the parts of a whole result: reasoning, text, then tool calls (events unused). */
  addWhole(result: GenerationResult): void {
    if (result.thinking) this.thinking(result.thinking)
    if (result.text !== '') this.text(result.text)
    this.finish(result)
  }
}
