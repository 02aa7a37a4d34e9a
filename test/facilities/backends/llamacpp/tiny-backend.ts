import { join } from 'node:path'
import { Ajv } from 'ajv'
import type { Test } from 'brittle'
import { LlamaCppBackend } from '../../../../facilities/backends/llamacpp/llamacpp.backend.js'
import {
  TINY_MODEL_NAME,
  type TinyModelOptions,
  writeTinyModel,
} from '../../../../facilities/tiny-model/tiny-model.js'
import type { GenerationDelta, GenerationResult, JsonSchema } from '../../../../kernel/wire.js'

/** What the tiny model answers greedily after `abc`. */
export const STEP1_TEXT = 'defghijklmnopqrstuvwxyz'
export const GREEDY = { temperature: 0 }

/**
 * An open llama.cpp backend (closed on teardown) over a folder with the tiny model and the
 * variants named in `variants` (file name → options).
 */
export async function tinyBackend(
  t: Test,
  variants: Record<string, TinyModelOptions> = {},
): Promise<LlamaCppBackend> {
  const modelsDir = await t.tmp()
  await writeTinyModel(join(modelsDir, `${TINY_MODEL_NAME}.gguf`))
  for (const [name, opts] of Object.entries(variants))
    await writeTinyModel(join(modelsDir, `${name}.gguf`), opts)
  const backend = new LlamaCppBackend({ modelsDir, threads: 1 })
  t.teardown(() => backend.close())
  await backend.open()
  return backend
}

/** Runs a generation collecting its text pieces and deltas. */
export async function collected(
  run: (cb: {
    onToken: (s: string) => void
    onDelta: (d: GenerationDelta) => void
  }) => Promise<GenerationResult>,
): Promise<{ result: GenerationResult; pieces: string[]; deltas: GenerationDelta[] }> {
  const pieces: string[] = []
  const deltas: GenerationDelta[] = []
  const result = await run({ onToken: (s) => pieces.push(s), onDelta: (d) => deltas.push(d) })
  return { result, pieces, deltas }
}

/**
 * Whether `value` is valid against `schema` (ajv), with ajv's complaint when not. A number
 * JSON.parse made Infinity (ajv lets it pass as an integer) is not: it would cross the wire as null.
 */
export function validates(schema: JsonSchema, value: unknown): { ok: boolean; errors: string } {
  const ajv = new Ajv({ strict: false })
  const ok = ajv.validate(schema, value)
  const finite = allFinite(value)
  return { ok: ok && finite, errors: finite ? ajv.errorsText() : 'a number too large for JSON' }
}

function allFinite(value: unknown): boolean {
  if (typeof value === 'number') return Number.isFinite(value)
  if (Array.isArray(value)) return value.every(allFinite)
  if (value !== null && typeof value === 'object') return Object.values(value).every(allFinite)
  return true
}
