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
  /**
   * One piece of text as a frame on the wire; `first` when no frame was written before it;
   * `index`: the choice it belongs to, with `n` > 1.
   */
  piece(text: string, first: boolean, index?: number): string
  /**
   * Reasoning, tool calls and log probabilities as a frame on the wire (`first` as for `piece`),
   * or '' when the dialect shows none of what the delta holds. A plan without it is sent no
   * deltas: its stream carries the text alone.
   */
  delta?(delta: GenerationDelta, first: boolean): string
  /** Writes (`writeFrame`) the frames that end a stream that went well; `empty` when no frame was written. */
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
 * The head waits for the first frame (text, or a delta when the plan frames
 * them), so an error before any output still gets its own status; an error
 * after it is the stream's last frame. Once the client has gone (`cancel`),
 * nothing more is written.
 */
export async function respondGeneration(
  res: ServerResponse,
  cancel: CancelToken,
  plan: GenerationPlan,
  framing: StreamFraming,
): Promise<void> {
  let started = false
  /** Writes the head before the first frame; says whether this is the first. */
  const start = () => {
    if (started) return false
    started = true
    noteFirstToken(res)
    res.writeHead(200, framing.headers)
    return true
  }
  const onToken = (text: string, index?: number) => {
    if (text === '' || cancel.aborted) return
    const first = start()
    writeFrame(res, plan.piece(text, first, index))
  }
  const frameDelta = plan.delta?.bind(plan)
  const onDelta =
    frameDelta &&
    ((delta: GenerationDelta) => {
      if (cancel.aborted) return
      const frame = frameDelta(delta, !started)
      if (frame === '') return
      start()
      writeFrame(res, frame)
    })

  let result: GenerationResult
  try {
    // Only a stream asks for text as it comes: an answer given whole travels whole, in one message.
    const cb: GenerateCallbacks = { cancel }
    if (plan.stream) {
      cb.onToken = onToken
      if (onDelta) cb.onDelta = onDelta
    }
    result = await plan.run(cb)
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
