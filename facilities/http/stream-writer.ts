import type { OutgoingHttpHeaders, ServerResponse } from 'node:http'
import type { CancelToken } from '../../kernel/cancel.js'
import type { GenerateCallbacks, GenerationDelta, GenerationResult, ToolCall } from '../../kernel/wire.js'
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
   * The frames that open a stream, written with its head before any other. Made once, when the
   * first output comes and before its frame is made (or at the end of a stream with none), so a
   * plan that numbers its events counts them in the order they go out.
   */
  opening?(): string
  /**
   * One piece of text as a frame on the wire ('' when the dialect shows nothing of it); `first`
   * when no frame was written before it; `index`: the choice it belongs to, with `n` > 1.
   */
  piece(text: string, first: boolean, index?: number): string
  /**
   * Reasoning, tool calls and log probabilities as a frame on the wire (`first` as for `piece`),
   * or '' when the dialect shows none of what the delta holds. A plan without it is sent no
   * deltas: its stream carries the text alone.
   */
  delta?(delta: GenerationDelta, first: boolean): string
  /**
   * Writes (`writeFrame`) the frames that end a stream that went well; `empty` when no output
   * came (the head, with any opening frames, went out just before).
   */
  finish(res: ServerResponse, result: GenerationResult, empty: boolean): void
  /** The whole answer as one JSON object, when not streamed. */
  whole(result: GenerationResult): unknown
}

/** An answer built part by part, each part returning its stream's events (Anthropic's blocks, the Responses' items). */
export interface AnswerParts {
  thinking(text: string): string
  toolCall(call: ToolCall): string
}

/** The frames of a delta's reasoning and finished tool calls, as `parts` adds them ('' for none). */
export function deltaFrames(parts: AnswerParts, delta: GenerationDelta): string {
  let frames = delta.thinking ? parts.thinking(delta.thinking) : ''
  for (const call of delta.toolCalls ?? []) frames += parts.toolCall(call)
  return frames
}

/** Writes one frame unless the client is gone. */
export function writeFrame(res: ServerResponse, frame: string): void {
  if (!res.destroyed) res.write(frame)
}

/**
 * Runs a generation and writes it as a stream of frames or one JSON object.
 * The head (with the plan's opening frames) waits for the first frame (text,
 * or a delta when the plan frames them), so an error before any output still
 * gets its own status; an error after it is the stream's last frame. Once the
 * client has gone (`cancel`), nothing more is written.
 */
export async function respondGeneration(
  res: ServerResponse,
  cancel: CancelToken,
  plan: GenerationPlan,
  framing: StreamFraming,
): Promise<void> {
  let started = false
  let opening: string | undefined
  /** The plan's opening frames ('' for none), made once. */
  const open = () => {
    opening ??= plan.opening?.() ?? ''
    return opening
  }
  /** Writes one output's frame ('' is none): before the first, the head and the opening frames. */
  const write = (frame: string) => {
    if (frame === '') return
    if (started) return writeFrame(res, frame)
    started = true
    noteFirstToken(res)
    res.writeHead(200, framing.headers)
    writeFrame(res, open() + frame)
  }
  const onToken = (text: string, index?: number) => {
    if (text === '' || cancel.aborted) return
    open()
    write(plan.piece(text, !started, index))
  }
  const frameDelta = plan.delta?.bind(plan)
  const onDelta =
    frameDelta &&
    ((delta: GenerationDelta) => {
      if (cancel.aborted) return
      open()
      write(frameDelta(delta, !started))
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
  if (empty) {
    res.writeHead(200, framing.headers)
    if (open() !== '') writeFrame(res, open())
  }
  plan.finish(res, result, empty)
  res.end()
}
