import type { GenerationResult } from '../../../kernel/wire.js'

/** Runs a generation with an `onToken` that collects the pieces; both backends' tests use it. */
export async function streamed(
  run: (onToken: (s: string) => void) => Promise<GenerationResult>,
): Promise<{ result: GenerationResult; pieces: string[] }> {
  const pieces: string[] = []
  const result = await run((s) => pieces.push(s))
  return { result, pieces }
}
