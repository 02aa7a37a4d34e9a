/**
 * Checks of a request's shape that every backend makes the same way, so a bad
 * request fails with the same ERR_BAD_REQUEST message whichever engine serves it.
 */
import { MeshError } from '../../kernel/errors.js'
import type { ChatRequest, GenerateRequest } from '../../kernel/wire.js'

/** The model name of a request. @throws ERR_BAD_REQUEST unless a non-empty string */
export function checkModelName(model: unknown): string {
  if (typeof model !== 'string' || model.trim() === '')
    throw MeshError.badRequest('model must be a non-empty string')
  return model
}

/** @throws ERR_BAD_REQUEST unless `prompt` is a string */
export function checkPrompt(prompt: unknown): string {
  if (typeof prompt !== 'string') throw MeshError.badRequest('prompt must be a string')
  return prompt
}

/** @throws ERR_BAD_REQUEST unless `input` is an array of strings */
export function checkEmbedInput(input: unknown): string[] {
  if (!Array.isArray(input) || !input.every((s) => typeof s === 'string')) {
    throw MeshError.badRequest('input must be an array of strings')
  }
  return input as string[]
}

/** @throws ERR_BAD_REQUEST unless `onToken` is absent or a function */
export function checkOnToken(onToken: unknown): void {
  if (onToken !== undefined && typeof onToken !== 'function')
    throw MeshError.badRequest('onToken must be a function')
}

/**
 * The caller's signal, before any work starts.
 * @throws ERR_BAD_REQUEST when it is not an AbortSignal, ERR_CANCELLED when it has already fired
 */
export function checkCallerSignal(signal: AbortSignal | undefined): void {
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw MeshError.badRequest('signal must be an AbortSignal')
  }
  if (signal?.aborted) throw MeshError.cancelled()
}

/** What of a request's shape (beyond text) a backend can honour. */
export interface ShapeSupport {
  tools?: boolean
  format?: boolean
  think?: boolean
  logprobs?: boolean
  penalties?: boolean
}

/**
 * Refuses what `support` lacks and the request asks for (a field left unset or off asks for
 * nothing), naming the field as the wire names it: never silently dropped.
 * @throws ERR_UNSUPPORTED
 */
export function refuseUnsupported(
  req: ChatRequest | GenerateRequest,
  backend: string,
  support: ShapeSupport,
): void {
  const why = `is not supported by the ${backend} backend`
  const tools = 'tools' in req ? req.tools : undefined
  if (!support.tools && tools?.length) throw MeshError.unsupported('tools', why)
  if (!support.tools && 'messages' in req && req.messages.some((m) => m.toolCalls?.length)) {
    throw MeshError.unsupported('messages.tool_calls', why)
  }
  if (!support.format && req.format) throw MeshError.unsupported('format', why)
  if (!support.think && req.think !== undefined && req.think !== false)
    throw MeshError.unsupported('think', why)
  if (!support.logprobs && req.logprobs !== undefined) throw MeshError.unsupported('logprobs', why)
  const o = req.options
  if (!support.penalties && (o?.presence_penalty || o?.frequency_penalty)) {
    throw MeshError.unsupported(o.presence_penalty ? 'presence_penalty' : 'frequency_penalty', why)
  }
}
