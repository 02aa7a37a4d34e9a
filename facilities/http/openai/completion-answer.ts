/** A legacy completion in OpenAI's objects: the whole `text_completion`, or its chunks. */
import type {
  ChoiceResult,
  GenerateCallbacks,
  GenerationDelta,
  GenerationResult,
  TokenLogprob,
} from '../../../kernel/wire.js'
import { dataEvent } from '../sse.js'
import { type GenerationPlan, writeFrame } from '../stream-writer.js'
import { type AnswerBase, choicesOf, endStream, usageOf } from './sse.js'

/**
 * Log probabilities in the legacy form: parallel lists, the alternatives as `{token: logprob}`,
 * and each token's offset in the choice's text (its first at `start`).
 */
export function legacyLogprobs(lps: TokenLogprob[], start: number) {
  const text_offset: number[] = []
  let offset = start
  for (const l of lps) {
    text_offset.push(offset)
    offset += l.token.length
  }
  return {
    tokens: lps.map((l) => l.token),
    token_logprobs: lps.map((l) => l.logprob),
    top_logprobs: lps.map((l) => Object.fromEntries((l.top ?? []).map((t) => [t.token, t.logprob]))),
    text_offset,
  }
}

const finishReason = (c: ChoiceResult) => (c.doneReason === 'length' ? 'length' : 'stop')

/**
 * The chunks of one streamed completion. Log probabilities come in chunks of their own, with
 * no text; their offsets run on from the choice's earlier tokens.
 */
class CompletionChunks {
  /** Per choice: the length of the tokens whose log probabilities were sent. */
  private readonly offsets = new Map<number, number>()

  constructor(private readonly base: AnswerBase) {}

  chunk(index: number, text: string, logprobs: unknown = null, finish: string | null = null) {
    return dataEvent({
      ...this.base,
      object: 'text_completion',
      choices: [{ index, text, logprobs, finish_reason: finish }],
    })
  }

  delta(d: GenerationDelta): string {
    if (!d.logprobs?.length) return ''
    const index = d.index ?? 0
    const start = this.offsets.get(index) ?? 0
    this.offsets.set(index, start + d.logprobs.reduce((n, l) => n + l.token.length, 0))
    return this.chunk(index, '', legacyLogprobs(d.logprobs, start))
  }

  finish(result: GenerationResult): string[] {
    return choicesOf(result).map((c) => this.chunk(c.index, '', null, finishReason(c)))
  }
}

/** How a legacy completion answers: whole, or streamed with usage last when `includeUsage`. */
export function completionPlan(
  base: AnswerBase,
  stream: boolean,
  includeUsage: boolean,
  run: (cb: GenerateCallbacks) => Promise<GenerationResult>,
): GenerationPlan {
  const chunks = new CompletionChunks(base)
  return {
    stream,
    run,
    piece: (text, _first, index = 0) => chunks.chunk(index, text),
    delta: (d) => chunks.delta(d),
    finish: (res, result) => {
      for (const frame of chunks.finish(result)) writeFrame(res, frame)
      endStream(
        res,
        includeUsage && { ...base, object: 'text_completion', choices: [], usage: usageOf(result) },
      )
    },
    whole: (result) => ({
      ...base,
      object: 'text_completion',
      choices: choicesOf(result).map((c) => ({
        index: c.index,
        text: c.text,
        logprobs: c.logprobs ? legacyLogprobs(c.logprobs, 0) : null,
        finish_reason: finishReason(c),
      })),
      usage: usageOf(result),
    }),
  }
}
