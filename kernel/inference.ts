import { z } from 'zod'
import type { CancelToken } from './cancel.js'
import { validate } from './config.js'
import { MeshError } from './errors.js'
import { type HopTiming, type ProcessorTiming, traceFields } from './trace.js'
import type { GenerationResult, InferenceSource } from './wire.js'

/**
 * The `infer` RPC payload (gateway and processor alike) and its validation.
 * One schema so a bad request gets the same ERR_BAD_REQUEST wherever it lands.
 */

export const MAX_MODEL_NAME = 256

/** A model name without Ollama's implied `:latest` tag: `llama3:latest` and `llama3` are one model. */
export const baseModel = (m: string) => (m.endsWith(':latest') ? m.slice(0, -':latest'.length) : m)
export const MAX_MESSAGES = 4096

const options = z
  .object({
    temperature: z.number().min(0).max(100).optional(),
    top_k: z.number().int().min(0).optional(),
    top_p: z.number().min(0).max(1).optional(),
    min_p: z.number().min(0).max(1).optional(),
    seed: z.number().int().optional(),
    num_predict: z.number().int().min(-2).optional(),
    stop: z.array(z.string().max(256)).max(16).optional(),
    repeat_penalty: z.number().min(0).optional(),
    num_ctx: z.number().int().positive().optional(),
  })
  .strip()

const message = z.object({
  role: z.enum(['system', 'user', 'assistant', 'tool']),
  content: z.string(),
})

const common = {
  /** Stream id chosen by the caller; chunks and cancel refer to it. */
  id: z.string().min(1).max(64).optional(),
  model: z.string().min(1).max(MAX_MODEL_NAME),
  options: options.optional(),
  stream: z.boolean().default(false),
  /** Gives up after this long (the gateway's `inferenceTimeoutMs` at most). */
  timeoutMs: z.number().int().positive().optional(),
  ...traceFields,
}

export const inferRequestSchema = z.discriminatedUnion('kind', [
  z
    .object({ kind: z.literal('chat'), messages: z.array(message).min(1).max(MAX_MESSAGES), ...common })
    .strip(),
  z
    .object({
      kind: z.literal('generate'),
      prompt: z.string(),
      system: z.string().optional(),
      raw: z.boolean().optional(),
      ...common,
    })
    .strip(),
])

export type InferRequest = z.output<typeof inferRequestSchema>
export type InferRequestInput = z.input<typeof inferRequestSchema>

/** The final reply of `infer`. When streamed, `text` is empty: the chunks carried it. */
export interface InferResult extends GenerationResult {
  model: string
  /** Hex key of the processor that served it (set by the gateway). */
  processor?: string
  /**
   * The request's id: with tracing on, the one made (or taken from the caller) at the gateway and
   * found in every log line about it; with tracing off, its id in the usage ledger.
   */
  requestId?: string
  /** Per-hop timing, with tracing on (set by the gateway). */
  timing?: HopTiming
}

/** A processor's `infer` reply: its own and its backend's time when the request carried a `requestId`. */
export type ProcessorReply = Omit<InferResult, 'timing'> & { timing?: ProcessorTiming }

export const modelRequestSchema = z.object({ model: z.string().min(1).max(MAX_MODEL_NAME) }).strip()

/** @throws ERR_BAD_REQUEST naming the bad field; ERR_PAYLOAD_TOO_LARGE over `maxPromptBytes` */
export function parseInferRequest(payload: unknown, maxPromptBytes: number): InferRequest {
  const req = validate(inferRequestSchema, payload, 'request', 'ERR_BAD_REQUEST')
  const size =
    req.kind === 'chat'
      ? req.messages.reduce((n, m) => n + Buffer.byteLength(m.content), 0)
      : Buffer.byteLength(req.prompt) + Buffer.byteLength(req.system ?? '')
  if (size > maxPromptBytes) throw MeshError.payloadTooLarge('prompt', size, maxPromptBytes)
  return req
}

/** The `{ model }` payload of `show`. @throws ERR_BAD_REQUEST */
export function parseModelRequest(payload: unknown): { model: string } {
  return validate(modelRequestSchema, payload, 'request', 'ERR_BAD_REQUEST')
}

/** Runs one validated request on a source, passing text pieces to `onToken`. */
export function runOnSource(
  source: InferenceSource,
  req: InferRequest,
  cancel: CancelToken,
  onToken?: (text: string) => void,
): Promise<GenerationResult> {
  const cb = onToken ? { cancel, onToken } : { cancel }
  if (req.kind === 'chat') {
    return source.chat(
      { model: req.model, messages: req.messages, ...(req.options ? { options: req.options } : {}) },
      cb,
    )
  }
  return source.generate(
    {
      model: req.model,
      prompt: req.prompt,
      ...(req.system !== undefined ? { system: req.system } : {}),
      ...(req.raw !== undefined ? { raw: req.raw } : {}),
      ...(req.options ? { options: req.options } : {}),
    },
    cb,
  )
}

export const MAX_EMBED_INPUTS = 2048

export const embedRequestSchema = z
  .object({
    model: z.string().min(1).max(MAX_MODEL_NAME),
    input: z.array(z.string()).max(MAX_EMBED_INPUTS),
    truncate: z.boolean().optional(),
    ...traceFields,
  })
  .strip()

/**
 * The `embed` RPC payload (gateway and processor alike, as `parseInferRequest`).
 * @throws ERR_BAD_REQUEST naming the bad field; ERR_PAYLOAD_TOO_LARGE over `maxInputBytes`
 */
export function parseEmbedRequest(
  payload: unknown,
  maxInputBytes: number,
): z.output<typeof embedRequestSchema> {
  const req = validate(embedRequestSchema, payload, 'request', 'ERR_BAD_REQUEST')
  const size = req.input.reduce((n, s) => n + Buffer.byteLength(s), 0)
  if (size > maxInputBytes) throw MeshError.payloadTooLarge('input', size, maxInputBytes)
  return req
}
