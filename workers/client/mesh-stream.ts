/**
 * MeshStream: what `MeshClient.chat` and `generate` return with `stream: true`. Apart from
 * the client because it is a type programs hold and iterate, and knows nothing of gateways:
 * it turns a start function's text callbacks and final result into an async iterable.
 */
import type { CancelToken } from '../../kernel/cancel.js'
import type { InferResult } from '../../kernel/inference.js'
import type { GenerationDelta } from '../../kernel/wire.js'
import { Feed } from './feed.js'

/**
 * One piece of a streamed answer (text, and reasoning, tool calls or log probabilities when
 * asked for); the last one has `done: true` and the final counts.
 */
export type StreamPart =
  | ({ done: false; text: string } & GenerationDelta)
  | { done: true; text: ''; result: InferResult }

/**
 * A streamed answer: iterate it for text pieces; `abort()` stops the
 * generation (on the processor too); `result` settles with the final counts.
 */
export class MeshStream extends Feed<StreamPart, InferResult> {
  constructor(
    start: (
      cancel: CancelToken,
      onText: (text: string, delta?: GenerationDelta) => void,
    ) => Promise<InferResult>,
  ) {
    super(
      (cancel, push) => start(cancel, (text, delta) => push({ done: false, text, ...delta })),
      (result) => ({ done: true, text: '', result }),
    )
  }
}
