/**
 * The counts and durations of a generation, in the shape every backend
 * reports them (`GenerationResult`), for the cases where the engine gave no
 * figures of its own.
 */
import type { DoneReason, GenerationResult } from '../../kernel/wire.js'

/** A generation that produced nothing (only loaded the model, or asked for no tokens). */
export function emptyResult(doneReason: DoneReason, totalMs: number, loadMs: number): GenerationResult {
  return {
    text: '',
    doneReason,
    promptTokens: 0,
    completionTokens: 0,
    totalMs,
    loadMs,
    promptEvalMs: 0,
    evalMs: 0,
  }
}

/** A generation stopped by its caller (or by close) after `text`, before the engine's final counts. */
export function cancelledResult(text: string, completionTokens: number, totalMs: number): GenerationResult {
  return {
    text,
    doneReason: 'cancelled',
    promptTokens: 0,
    completionTokens,
    totalMs,
    loadMs: 0,
    promptEvalMs: 0,
    evalMs: 0,
  }
}

/** Wall-clock marks of one generation (performance.now() values). */
export interface GenerationMarks {
  started: number
  loadMs: number
  /** When the prompt started to be evaluated. */
  generating: number
  /** null when no text came out. */
  firstToken: number | null
  ended: number
}

/**
 * The durations Ollama reports, from marks taken around a token loop: the
 * prompt is evaluated until the first token, the rest is generation.
 */
export function timedResult(
  text: string,
  doneReason: DoneReason,
  promptTokens: number,
  completionTokens: number,
  marks: GenerationMarks,
): GenerationResult {
  const { started, loadMs, generating, firstToken, ended } = marks
  return {
    text,
    doneReason,
    promptTokens,
    completionTokens,
    totalMs: ended - started,
    loadMs,
    promptEvalMs: (firstToken ?? ended) - generating,
    evalMs: firstToken === null ? 0 : ended - firstToken,
  }
}
