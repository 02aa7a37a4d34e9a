import { CancelToken } from '../../kernel/cancel.js'
import { MeshError } from '../../kernel/errors.js'
import { addAnswerParts, type InferResult } from '../../kernel/inference.js'
import type { ChoiceResult } from '../../kernel/wire.js'

/**
 * A request's `n` choices (`n` > 1), fanned out by the gateway: one leg per choice, all at
 * once, each forwarded as a request of its own (retried and failed over on its own) and
 * preferring a processor no sibling uses. Processors never see `n`: each makes one choice.
 */

/** One choice of a fanned-out request, as its leg is forwarded. */
export interface ChoiceLeg {
  /** Its index: the stream's pieces of it carry it, its place in `choices`. */
  index: number
  /** Processors the request's legs run on, shared by all of them (see `LeaseOptions.avoid`). */
  avoid: Set<string>
}

/** Tokens a request used that no answer carries, for its usage record: what ran when it failed. */
export interface Spent {
  promptTokens: number
  completionTokens: number
}

/** Forwards one leg, stopped by `cancel`. */
export type RunLeg = (choice: ChoiceLeg, cancel: CancelToken) => Promise<InferResult>

/** A leg's choice as the answer lists it (its reasoning, calls and log probabilities when set: `addAnswerParts`). */
function choiceOf(result: InferResult, index: number): ChoiceResult {
  const choice: ChoiceResult = {
    index,
    text: result.text,
    doneReason: result.doneReason,
    promptTokens: result.promptTokens,
    completionTokens: result.completionTokens,
  }
  if (result.processor !== undefined) choice.processor = result.processor
  // All the leg's reply holds is the choice's (a streamed leg's left out what its chunks carried).
  addAnswerParts(choice, result, false)
  return choice
}

/** The choice of a leg stopped before it produced anything. */
function stoppedChoice(index: number): ChoiceResult {
  return { index, text: '', doneReason: 'cancelled', promptTokens: 0, completionTokens: 0 }
}

/**
 * The answer's own fields, the first choice's: its text, reasons, processor and durations.
 * A first choice stopped before any text has none: another's model and durations then.
 */
function firstAnswer(results: ReadonlyArray<InferResult | null>): InferResult {
  const first = results[0]
  if (first) return { ...first }
  const other = results.find((r) => r !== null)
  if (!other) throw MeshError.cancelled()
  const { model, totalMs, loadMs, promptEvalMs, evalMs } = other
  return {
    model,
    text: '',
    doneReason: 'cancelled',
    promptTokens: 0,
    completionTokens: 0,
    totalMs,
    loadMs,
    promptEvalMs,
    evalMs,
  }
}

/**
 * The request's answer from its legs' (null: stopped before any text): every choice in index
 * order, its own fields the first choice's, its token counts the sums over the choices.
 * @throws ERR_CANCELLED when no leg answered
 */
export function joinChoices(results: ReadonlyArray<InferResult | null>): InferResult {
  const answer = firstAnswer(results)
  const choices = results.map((r, i) => (r ? choiceOf(r, i) : stoppedChoice(i)))
  answer.promptTokens = choices.reduce((n, c) => n + c.promptTokens, 0)
  answer.completionTokens = choices.reduce((n, c) => n + c.completionTokens, 0)
  answer.choices = choices
  return answer
}

/**
 * Runs `n` legs at once and joins their choices. The first leg that fails (after its own
 * retries) fails the request: its siblings are stopped as a caller stops a stream (each
 * processor answers with what it generated), their tokens go to `spent`, and its error is
 * thrown. `cancel` stops every leg the same way: stopped by its caller, the choices that
 * produced text are answered, marked cancelled, and the others as empty cancelled ones;
 * stopped with an error (the deadline's), the request fails with it, what ran billed.
 * @throws the failing leg's error, `cancel`'s error; ERR_CANCELLED when no leg produced anything
 */
export async function runChoices(
  n: number,
  cancel: CancelToken,
  spent: Spent,
  run: RunLeg,
): Promise<InferResult> {
  const avoid = new Set<string>()
  const stops = Array.from({ length: n }, () => new CancelToken())
  const unfollow = stops.map((stop) => cancel.onAbort((reason) => stop.abort(reason)))
  let failure: { error: unknown } | null = null
  const fail = (err: unknown) => {
    // What a stop made the other legs throw is not a failure of their own.
    if (failure || cancel.aborted) return
    failure = { error: err }
    for (const stop of stops) stop.abort()
  }
  try {
    const settled = await Promise.allSettled(
      stops.map((stop, index) =>
        run({ index, avoid }, stop).catch((err: unknown) => {
          fail(err)
          throw err
        }),
      ),
    )
    const results = settled.map((s) => (s.status === 'fulfilled' ? s.value : null))
    // The first leg's failure, or the deadline's: the answers that came back are billed with it.
    const failed = (failure as { error: unknown } | null) ?? stoppedBy(cancel)
    if (failed) {
      for (const r of results) spend(spent, r)
      throw failed.error
    }
    return joinChoices(results)
  } finally {
    for (const stop of unfollow) stop()
  }
}

/** The error a request stopped by `cancel` fails with (the deadline's), or null: its caller stopped it. */
function stoppedBy(cancel: CancelToken): { error: MeshError } | null {
  return cancel.reason instanceof MeshError ? { error: cancel.reason } : null
}

/** Adds the tokens of an answer that will not be returned (its request failed) to `spent`. */
export function spend(spent: Spent, result: Spent | null): void {
  if (!result) return
  spent.promptTokens += result.promptTokens
  spent.completionTokens += result.completionTokens
}
