/**
 * Checks of a request's shape that every backend makes the same way, so a bad
 * request fails with the same ERR_BAD_REQUEST message whichever engine serves it.
 */
import { MeshError } from '../../kernel/errors.js'

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
