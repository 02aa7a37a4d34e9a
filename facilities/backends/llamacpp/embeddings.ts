/** Embeddings of a loaded model: one L2-normalised vector per input, as Ollama's /api/embed. */
import type { LlamaEmbeddingContext } from 'node-llama-cpp'
import { MeshError } from '../../../kernel/errors.js'
import type { LoadedModel } from './loaded-models.js'
import { headOf } from './text-limits.js'

/** The model's embedding context, made on first use and kept until it unloads. */
export function embeddingContextOf(
  lm: LoadedModel,
  contextSize: number,
  threads: number,
): Promise<LlamaEmbeddingContext> {
  if (!lm.embedding) {
    const created = lm.model.createEmbeddingContext({ contextSize, threads })
    lm.embedding = created
    created.catch(() => {
      if (lm.embedding === created) lm.embedding = null
    })
  }
  return lm.embedding
}

/**
 * Embeds `texts` one after another. Inputs longer than the context are cut
 * unless `truncate` is false.
 * @throws ERR_BAD_REQUEST (too long without truncate), `abortError()` when aborted between inputs
 */
export async function embedTexts(
  lm: LoadedModel,
  ctx: LlamaEmbeddingContext,
  texts: string[],
  run: { truncate: boolean; contextSize: number; signal: AbortSignal; abortError: () => MeshError },
): Promise<{ embeddings: number[][]; promptTokens: number }> {
  const { truncate, contextSize, signal } = run
  const embeddings: number[][] = []
  let promptTokens = 0
  for (const input of texts) {
    if (signal.aborted) throw run.abortError()
    // Past maxInputChars an input is surely longer than the context: cut before tokenizing.
    if (!truncate && input.length > lm.maxInputChars) {
      throw MeshError.badRequest(`input is more than ${contextSize} tokens, the context's size`, {
        limit: contextSize,
      })
    }
    let tokens = lm.model.tokenize(headOf(input, lm.maxInputChars))
    // calculateInputLength adds the BOS/EOS the model wants; the context must hold them too.
    const overhead = ctx.calculateInputLength(tokens) - tokens.length
    const room = contextSize - 1 - overhead
    if (tokens.length > room) {
      if (!truncate) {
        throw MeshError.badRequest(`input is ${tokens.length} tokens, the context holds ${room}`, {
          tokens: tokens.length,
          limit: room,
        })
      }
      tokens = tokens.slice(0, room)
    }
    const { vector } = await ctx.getEmbeddingFor(tokens)
    promptTokens += ctx.calculateInputLength(tokens)
    const norm = Math.sqrt(vector.reduce((a, x) => a + x * x, 0))
    embeddings.push(norm > 0 ? vector.map((x) => x / norm) : [...vector])
  }
  return { embeddings, promptTokens }
}
