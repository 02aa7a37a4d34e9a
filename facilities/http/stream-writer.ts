import type { OutgoingHttpHeaders, ServerResponse } from 'node:http'
import type { CancelToken } from '../../kernel/cancel.js'
import type { GenerateCallbacks, GenerationDelta, GenerationResult } from '../../kernel/wire.js'
import { noteFailure, noteFirstToken } from './observed.js'
import { sendJson } from './plumbing.js'

/** How one API dialect frames any streamed answer: a constant per dialect. */
export interface StreamFraming {
  /** The head of a streamed answer (status 200). */
  readonly headers: OutgoingHttpHeaders
  /** A failure after the head went out, as the stream's last frame. */
  failure(err: unknown): string
  /** A failure before anything was written: the dialect's error reply, with its own status. */
  sendError(res: ServerResponse, err: unknown): void
}

/** One generation as a dialect answers it. */
export interface GenerationPlan {
  /** Whether the client asked for the text as it comes. */
  stream: boolean
  run(cb: GenerateCallbacks): Promise<GenerationResult>
  /** One piece of text as a frame on the wire; `first` when no piece was written before it. */
  piece(text: string, first: boolean): string
  /**
   * Reasoning, tool calls or log probabilities as a frame, `first` as for `piece` ('' writes
   * nothing). Absent: the dialect streams text only (and the source is not asked for deltas).
   */
  delta?(delta: GenerationDelta, first: boolean): string
  /** Writes (`writeFrame`) the frames that end a stream that went well; `empty` when nothing was written. */
  finish(res: ServerResponse, result: GenerationResult, empty: boolean): void
  /** The whole answer as one JSON object, when not streamed. */
  whole(result: GenerationResult): unknown
}

/** Writes one frame unless the client is gone. */
export function writeFrame(res: ServerResponse, frame: string): void {
  if (!res.destroyed) res.write(frame)
}

/**
 * Runs a generation and writes it as a stream of frames or one JSON object.
 * The head waits for the first frame (text, or a delta), so an error before any output
 * still gets its own status; an error after it is the stream's last frame.
 * Once the client has gone (`cancel`), nothing more is written.
 */
export async function respondGeneration(
  res: ServerResponse,
  cancel: CancelToken,
  plan: GenerationPlan,
  framing: StreamFraming,
): Promise<void> {
  let started = false
  const write = (frame: string) => {
    if (!started) {
      started = true
      noteFirstToken(res)
      res.writeHead(200, framing.headers)
    }
    writeFrame(res, frame)
  }
  const onToken = (text: string) => {
    if (text === '' || cancel.aborted) return
    write(plan.piece(text, !started))
  }
  const delta = plan.delta?.bind(plan)
  const cb: GenerateCallbacks = { cancel, onToken }
  if (delta) {
    cb.onDelta = (d) => {
      if (cancel.aborted) return
      const frame = delta(d, !started)
      if (frame !== '') write(frame)
    }
  }

  let result: GenerationResult
  try {
    // Only a stream asks for text as it comes: an answer given whole travels whole, in one message.
    result = await plan.run(plan.stream ? cb : { cancel })
  } catch (err) {
    if (cancel.aborted) return
    if (!started) return framing.sendError(res, err)
    noteFailure(res, err)
    writeFrame(res, framing.failure(err))
    res.end()
    return
  }
  if (cancel.aborted) return
  if (!plan.stream) return sendJson(res, 200, plan.whole(result))
  const empty = !started
  if (empty) res.writeHead(200, framing.headers)
  plan.finish(res, result, empty)
  res.end()
}
