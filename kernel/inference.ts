import { z } from 'zod'
import type { CancelToken } from './cancel.js'
import { validate } from './config.js'
import { MeshError } from './errors.js'
import { type HopTiming, type ProcessorTiming, traceFields } from './trace.js'
import type {
  AnswerShape,
  ChatRequest,
  GenerateCallbacks,
  GenerationDelta,
  GenerationResult,
  InferenceSource,
} from './wire.js'

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
    repeat_last_n: z.number().int().min(-1).optional(),
    presence_penalty: z.number().min(-2).max(2).optional(),
    frequency_penalty: z.number().min(-2).max(2).optional(),
    num_ctx: z.number().int().positive().optional(),
  })
  .strip()

export const MAX_TOOLS = 128
export const MAX_LOGPROBS = 20
/** Most choices one request may ask for (`n`). */
export const MAX_CHOICES = 8
/** OpenAI's rule for function names, which Ollama and Anthropic accept too. */
export const TOOL_NAME = /^[a-zA-Z0-9_-]{1,64}$/

const jsonSchema = z.record(z.string(), z.unknown())
const toolName = z.string().regex(TOOL_NAME, 'a function name: 1 to 64 letters, digits, _ or -')

export const toolCallSchema = z
  .object({ id: z.string().min(1).max(128), name: toolName, arguments: z.record(z.string(), z.unknown()) })
  .strip()

const tool = z
  .object({
    type: z.literal('function'),
    function: z
      .object({
        name: toolName,
        description: z.string().max(8192).optional(),
        parameters: jsonSchema.optional(),
        strict: z.boolean().optional(),
      })
      .strip(),
  })
  .strip()

const message = z
  .object({
    role: z.enum(['system', 'user', 'assistant', 'tool']),
    content: z.string(),
    thinking: z.string().optional(),
    toolCalls: z.array(toolCallSchema).max(MAX_TOOLS).optional(),
    toolCallId: z.string().max(128).optional(),
    toolName: z.string().max(64).optional(),
  })
  .strip()

const common = {
  /** Stream id chosen by the caller; chunks and cancel refer to it. */
  id: z.string().min(1).max(64).optional(),
  model: z.string().min(1).max(MAX_MODEL_NAME),
  options: options.optional(),
  stream: z.boolean().default(false),
  /** Gives up after this long (the gateway's `inferenceTimeoutMs` at most). */
  timeoutMs: z.number().int().positive().optional(),
  format: z
    .object({ type: z.literal('json'), schema: jsonSchema.optional() })
    .strip()
    .optional(),
  think: z.union([z.boolean(), z.enum(['low', 'medium', 'high'])]).optional(),
  logprobs: z.number().int().min(0).max(MAX_LOGPROBS).optional(),
  /** Choices to generate; the gateway fans them out (processors are sent one each). */
  n: z.number().int().min(1).max(MAX_CHOICES).optional(),
  ...traceFields,
}

export const inferRequestSchema = z.discriminatedUnion('kind', [
  z
    .object({
      kind: z.literal('chat'),
      messages: z.array(message).min(1).max(MAX_MESSAGES),
      tools: z.array(tool).max(MAX_TOOLS).optional(),
      toolChoice: z
        .union([z.enum(['auto', 'none', 'required']), z.object({ name: toolName }).strip()])
        .optional(),
      parallelToolCalls: z.boolean().optional(),
      ...common,
    })
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

/** Bytes of what a chat request makes the model read: every message's text, calls and reasoning, and the tools. */
function chatBytes(req: Extract<InferRequest, { kind: 'chat' }>): number {
  let n = req.tools ? Buffer.byteLength(JSON.stringify(req.tools)) : 0
  for (const m of req.messages) {
    n += Buffer.byteLength(m.content)
    if (m.thinking) n += Buffer.byteLength(m.thinking)
    if (m.toolCalls) n += Buffer.byteLength(JSON.stringify(m.toolCalls))
  }
  return n
}

/**
 * A tool choice that names no tool there is (its shape already checked); backends called
 * directly check with it too. @throws ERR_BAD_REQUEST
 */
export function checkToolChoice(req: Pick<ChatRequest, 'toolChoice' | 'tools'>): void {
  const choice = req.toolChoice
  if (choice === undefined || choice === 'auto' || choice === 'none') return
  const tools = req.tools ?? []
  if (tools.length === 0)
    throw MeshError.badRequest('request.toolChoice: needs tools', { param: 'tool_choice' })
  if (typeof choice === 'object' && !tools.some((t) => t.function.name === choice.name)) {
    throw MeshError.badRequest(`request.toolChoice: no tool is named '${choice.name}'`, {
      param: 'tool_choice',
    })
  }
}

/** Deepest nesting of objects and arrays a JSON schema, tool parameters or call arguments may have. */
export const MAX_JSON_DEPTH = 64

/** Whether `value` nests objects and arrays more than `max` levels deep (looks no deeper than that). */
function deeperThan(value: unknown, max: number): boolean {
  if (value === null || typeof value !== 'object') return false
  if (max === 0) return true
  for (const v of Object.values(value)) if (deeperThan(v, max - 1)) return true
  return false
}

/**
 * Refuses a schema or arguments nested deeper than MAX_JSON_DEPTH before anything
 * stringifies them: a payload of a few hundred KB nested 20,000 deep makes `JSON.stringify`
 * overflow the stack (a RangeError, an internal error) and no model needs it.
 * @throws ERR_BAD_REQUEST naming the field
 */
function checkDepth(req: InferRequest): void {
  const fields: Array<[string, unknown]> = [['request.format.schema', req.format?.schema]]
  if (req.kind === 'chat') {
    for (const [i, t] of (req.tools ?? []).entries())
      fields.push([`request.tools[${i}].function.parameters`, t.function.parameters])
    for (const [i, m] of req.messages.entries())
      for (const [j, c] of (m.toolCalls ?? []).entries())
        fields.push([`request.messages[${i}].toolCalls[${j}].arguments`, c.arguments])
  }
  for (const [field, value] of fields)
    if (deeperThan(value, MAX_JSON_DEPTH))
      throw MeshError.badRequest(`${field}: nested deeper than ${MAX_JSON_DEPTH} levels`)
}

/**
 * Bytes of what a request makes the model read: a chat's (`chatBytes`), or a completion's
 * prompt and system text; and the JSON schema its answer must follow (it becomes a grammar
 * or part of the prompt).
 */
function promptBytes(req: InferRequest): number {
  const schema = req.format?.schema ? Buffer.byteLength(JSON.stringify(req.format.schema)) : 0
  if (req.kind === 'chat') return chatBytes(req) + schema
  return Buffer.byteLength(req.prompt) + Buffer.byteLength(req.system ?? '') + schema
}

/**
 * @throws ERR_BAD_REQUEST naming the bad field (a schema or arguments nested deeper than
 * MAX_JSON_DEPTH too); ERR_PAYLOAD_TOO_LARGE over `maxPromptBytes`
 */
export function parseInferRequest(payload: unknown, maxPromptBytes: number): InferRequest {
  const req = validate(inferRequestSchema, payload, 'request', 'ERR_BAD_REQUEST')
  if (req.kind === 'chat') checkToolChoice(req)
  checkDepth(req)
  const size = promptBytes(req)
  if (size > maxPromptBytes) throw MeshError.payloadTooLarge('prompt', size, maxPromptBytes)
  return req
}

/** The `{ model }` payload of `show`. @throws ERR_BAD_REQUEST */
export function parseModelRequest(payload: unknown): { model: string } {
  return validate(modelRequestSchema, payload, 'request', 'ERR_BAD_REQUEST')
}

/** The fields of `req` that change the kind of answer, those set only. */
function shapeOf(req: InferRequest): AnswerShape {
  const shape: AnswerShape = {}
  if (req.format !== undefined) shape.format = req.format
  if (req.think !== undefined) shape.think = req.think
  if (req.logprobs !== undefined) shape.logprobs = req.logprobs
  return shape
}

/** Runs one validated request on a source, passing text pieces to `onToken` and the rest to `onDelta`. */
export function runOnSource(
  source: InferenceSource,
  req: InferRequest,
  cancel: CancelToken,
  onToken?: (text: string) => void,
  onDelta?: (delta: GenerationDelta) => void,
): Promise<GenerationResult> {
  const cb: GenerateCallbacks = { cancel }
  if (onToken) cb.onToken = onToken
  if (onDelta) cb.onDelta = onDelta
  const options = req.options ? { options: req.options } : {}
  if (req.kind === 'chat') {
    return source.chat(
      {
        model: req.model,
        messages: req.messages,
        ...options,
        ...shapeOf(req),
        ...(req.tools ? { tools: req.tools } : {}),
        ...(req.toolChoice !== undefined ? { toolChoice: req.toolChoice } : {}),
        ...(req.parallelToolCalls !== undefined ? { parallelToolCalls: req.parallelToolCalls } : {}),
      },
      cb,
    )
  }
  return source.generate(
    {
      model: req.model,
      prompt: req.prompt,
      ...(req.system !== undefined ? { system: req.system } : {}),
      ...(req.raw !== undefined ? { raw: req.raw } : {}),
      ...options,
      ...shapeOf(req),
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

/** The parts of an answer besides its text: reasoning, tool calls, log probabilities. */
export type AnswerParts = Pick<GenerationResult, 'thinking' | 'toolCalls' | 'logprobs'>

/**
 * Copies an answer's parts that are set (reasoning and tool calls not empty) from `result`
 * onto `reply`: its tool calls always, its reasoning and log probabilities only when the
 * answer was not `streamed` (a stream's chunks carried them). The one rule for every answer
 * built from another: the processor's reply, the gateway's choices (choices.ts), and
 * meant for the OpenAI dialect's `choicesOf` (facilities/http/openai/sse.ts), a copy still.
 */
export function addAnswerParts(reply: AnswerParts, result: AnswerParts, streamed: boolean): void {
  if (result.toolCalls?.length) reply.toolCalls = result.toolCalls
  if (streamed) return
  if (result.thinking) reply.thinking = result.thinking
  if (result.logprobs) reply.logprobs = result.logprobs
}
