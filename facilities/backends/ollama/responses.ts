/** Ollama's responses as ours: model listings, streamed chunks and the final counts. */
import type { EmbedResponse, GenerateResponse, ListResponse, ModelResponse, ShowResponse } from 'ollama'
import type {
  DoneReason,
  EmbedResult,
  GenerationResult,
  ModelDetails,
  ModelDetailsSummary,
  ModelInfo,
  RunningModel,
} from '../../../kernel/wire.js'

const NS_PER_MS = 1_000_000

/** The counts of the done frame of a stream. */
export type FinalStats = Pick<
  GenerateResponse,
  | 'done_reason'
  | 'total_duration'
  | 'load_duration'
  | 'prompt_eval_count'
  | 'prompt_eval_duration'
  | 'eval_count'
  | 'eval_duration'
>

function msOf(ns: unknown): number {
  return typeof ns === 'number' && Number.isFinite(ns) && ns > 0 ? ns / NS_PER_MS : 0
}

function countOf(n: unknown): number {
  return typeof n === 'number' && Number.isFinite(n) && n > 0 ? Math.round(n) : 0
}

function doneReasonOf(reason: unknown): DoneReason {
  return reason === 'length' ? 'length' : 'stop'
}

/** Ollama sends timestamps as strings although the client types them as Date. */
function isoOf(v: unknown): string {
  if (v instanceof Date) return v.toISOString()
  if (typeof v === 'string' && !Number.isNaN(Date.parse(v))) return new Date(v).toISOString()
  return new Date(0).toISOString()
}

function detailsOf(d: Partial<ModelResponse['details']> | undefined): ModelDetailsSummary {
  return {
    format: d?.format ?? '',
    family: d?.family ?? '',
    // Ollama sends null for a model with no family list.
    families: Array.isArray(d?.families) ? d.families : d?.family ? [d.family] : [],
    parameterSize: d?.parameter_size ?? '',
    quantizationLevel: d?.quantization_level ?? '',
  }
}

export function infoOf(m: ModelResponse): ModelInfo {
  return {
    name: m.name || m.model,
    size: countOf(m.size),
    digest: m.digest ?? '',
    modifiedAt: isoOf(m.modified_at),
    details: detailsOf(m.details),
  }
}

export function runningOf(m: ModelResponse): RunningModel {
  return { ...infoOf(m), expiresAt: isoOf(m.expires_at), sizeVram: countOf(m.size_vram) }
}

/** `model` shown: /api/show has no size or digest; the listing has them. */
export function detailsFrom(model: string, shown: ShowResponse, listed: ListResponse): ModelDetails {
  const entry = (listed.models ?? []).find(
    (m) => m.name === model || m.model === model || m.name === `${model}:latest`,
  )
  const modelInfo: Record<string, unknown> = {}
  // Typed as a Map, but JSON gives a plain object.
  for (const [k, v] of Object.entries((shown.model_info ?? {}) as object)) modelInfo[k] = v
  return {
    name: entry ? entry.name : model,
    size: entry ? countOf(entry.size) : 0,
    digest: entry?.digest ?? '',
    modifiedAt: isoOf(shown.modified_at ?? entry?.modified_at),
    details: detailsOf(shown.details ?? entry?.details),
    template: shown.template ?? '',
    parameters: shown.parameters ?? '',
    modelInfo,
    capabilities: Array.isArray(shown.capabilities) ? shown.capabilities : [],
  }
}

export function embedResultOf(res: EmbedResponse): EmbedResult {
  return {
    embeddings: res.embeddings ?? [],
    promptTokens: countOf(res.prompt_eval_count),
    totalMs: msOf(res.total_duration),
    loadMs: msOf(res.load_duration),
  }
}

/** A finished stream's result, with Ollama's counts (durations in ns) from its done frame. */
export function finalResult(text: string, final: FinalStats): GenerationResult {
  return {
    text,
    doneReason: doneReasonOf(final.done_reason),
    promptTokens: countOf(final.prompt_eval_count),
    completionTokens: countOf(final.eval_count),
    totalMs: msOf(final.total_duration),
    loadMs: msOf(final.load_duration),
    promptEvalMs: msOf(final.prompt_eval_duration),
    evalMs: msOf(final.eval_duration),
  }
}
