import type { ServerResponse } from 'node:http'
import type { CancelToken } from '../../kernel/cancel.js'
import type { GenerateCallbacks, GenerationDelta, GenerationResult } from '../../kernel/wire.js'
import { noteFailure, noteFirstToken } from './observed.js'
import { sendJson } from './plumbing.js'
import { type StreamFraming, writeFrame } from './stream-writer.js'

/**
 * A generation as a dialect whose stream is a sequence of typed events answers it (Anthropic's
 * Messages, OpenAI's Responses): the answer's text, its reasoning and its tool calls each become
 * frames as they come. The plan keeps its own state (which block or item is open); every method
 * but `run` and `whole` returns the frames to write ('' for none).
 */
export interface EventPlan {
  /** Whether the client asked for the answer as it comes. */
  stream: boolean
  run(cb: GenerateCallbacks): Promise<GenerationResult>
  /** The frames that open the stream, written with its head before anything else. */
  start(): string
  /** The frames of one piece of the answer's text. */
  text(text: string): string
  /** The frames of one delta: reasoning, finished tool calls. */
  delta(delta: GenerationDelta): string
  /** The frames that end a stream that went well. */
  finish(result: GenerationResult): string
  /** The whole answer as one JSON object, when not streamed. */
  whole(result: GenerationResult): unknown
}

/**
 * Runs a generation and writes it as a stream of events or one JSON object, as
 * `respondGeneration` (stream-writer.ts) does for text-only streams: the head waits for the
 * first output (text or delta), so an error before any still gets its own status; an error
 * after it is the stream's last frame; once the client has gone (`cancel`), nothing more is
 * written.
 */
export async function respondEvents(
  res: ServerResponse,
  cancel: CancelToken,
  plan: EventPlan,
  framing: StreamFraming,
): Promise<void> {
  let started = false
  // The opening frames come before the first part's, though the head waits for a part with frames.
  let opening: string | null = null
  const write = (part: () => string) => {
    if (cancel.aborted) return
    if (started) return writeFrame(res, part())
    opening ??= plan.start()
    const frames = part()
    if (frames === '') return
    started = true
    noteFirstToken(res)
    res.writeHead(200, framing.headers)
    writeFrame(res, opening + frames)
  }
  const cb: GenerateCallbacks = plan.stream
    ? {
        cancel,
        onToken: (text) => {
          if (text !== '') write(() => plan.text(text))
        },
        onDelta: (delta) => write(() => plan.delta(delta)),
      }
    : { cancel }

  let result: GenerationResult
  try {
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
  if (!started) {
    res.writeHead(200, framing.headers)
    writeFrame(res, opening ?? plan.start())
  }
  writeFrame(res, plan.finish(result))
  res.end()
}

/** One server-sent event with its name, as Anthropic's and OpenAI's Responses streams frame them. */
export function namedEvent(name: string, data: unknown): string {
  return `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`
}

/** The head of a server-sent event stream. */
export const SSE_HEADERS = {
  'Content-Type': 'text/event-stream; charset=utf-8',
  'Cache-Control': 'no-cache',
  Connection: 'keep-alive',
  'X-Accel-Buffering': 'no',
} as const
