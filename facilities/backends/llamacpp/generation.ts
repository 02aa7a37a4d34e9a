/**
 * One generation on one context sequence: the token loop of LlamaChat (chat-generation.ts) or
 * LlamaCompletion, streaming text to the caller, counting tokens and timing the prompt and
 * the generation.
 */
import { LlamaCompletion, type LlamaContextSequence, type LlamaGrammar, type Token } from 'node-llama-cpp'
import type { MeshError } from '../../../kernel/errors.js'
import type { DoneReason, GenerationDelta, GenerationResult, ToolCall } from '../../../kernel/wire.js'
import { timedResult } from '../generation-stats.js'
import type { LoadedModel } from './loaded-models.js'
import { rawPromptTokens } from './prompting.js'
import { type SamplingPlan, samplingOptions } from './sampling.js'
import { tailOf } from './text-limits.js'

/** What a token loop returns, before counting and timing. */
export interface RawOutput {
  response: string
  stopReason: string
  /** Tokens of the whole prompt (cached prefix included), as Ollama's prompt_eval_count. */
  promptTokens: number
  /** Generated tokens that `onToken` did not see (reasoning, calls through function calling). */
  otherTokens?: number
  thinking?: string
  toolCalls?: ToolCall[]
}

export interface GenerationHooks {
  signal: AbortSignal
  onTextChunk(text: string): void
  onToken(tokens: Token[]): void
  /** The caller's, when it streams reasoning and calls. */
  onDelta: ((delta: GenerationDelta) => void) | undefined
}

/** Runs a token loop on a sequence of a loaded model. */
export type Producer = (
  seq: LlamaContextSequence,
  lm: LoadedModel,
  hooks: GenerationHooks,
) => Promise<RawOutput>

function doneReasonOf(stopReason: string): DoneReason {
  if (stopReason === 'maxTokens') return 'length'
  if (stopReason === 'abort') return 'cancelled'
  return 'stop'
}

/**
 * A plain-text continuation of `text` (a raw `generate`), under `grammar` when the answer
 * must be JSON (made once a model is leased: grammars belong to the llama that runs them).
 */
export function completionProducer(
  text: string,
  plan: SamplingPlan,
  contextSize: number,
  grammar: (() => Promise<LlamaGrammar>) | null,
): Producer {
  return async (seq, lm, hooks) => {
    // The context keeps a long prompt's end; cut it before tokenizing (see text-limits.ts).
    const prompt = tailOf(text, lm.maxInputChars)
    const promptTokens = rawPromptTokens(lm.model, prompt, contextSize)
    const shape = grammar ? { grammar: await grammar() } : {}
    const completion = new LlamaCompletion({ contextSequence: seq, autoDisposeSequence: false })
    try {
      const res = await completion.generateCompletionWithMeta(prompt, {
        ...samplingOptions(plan, contextSize),
        ...shape,
        signal: hooks.signal,
        onTextChunk: hooks.onTextChunk,
        onToken: hooks.onToken,
        stopOnAbortSignal: true,
      })
      return { response: res.response, stopReason: res.metadata.stopReason, promptTokens }
    } finally {
      completion.dispose({ disposeSequence: false })
    }
  }
}

/**
 * Runs `produce` on `seq`, streaming non-empty text to `onToken`.
 * @throws `abortError()` when aborted before any text
 */
export async function runGeneration(
  seq: LlamaContextSequence,
  lm: LoadedModel,
  produce: Producer,
  run: {
    signal: AbortSignal
    onToken: ((text: string) => void) | undefined
    onDelta: ((delta: GenerationDelta) => void) | undefined
    started: number
    loadMs: number
    abortError: () => MeshError
  },
): Promise<GenerationResult> {
  const { signal, onToken, onDelta, started, loadMs } = run
  const generating = performance.now()
  let firstToken: number | null = null
  let completionTokens = 0
  const out = await produce(seq, lm, {
    signal,
    onTextChunk: (text) => {
      if (text === '') return
      firstToken ??= performance.now()
      onToken?.(text)
    },
    onToken: (tokens) => {
      // A forced call's tokens come as no text pieces: the first token still ends the prompt's evaluation.
      firstToken ??= performance.now()
      completionTokens += tokens.length
    },
    onDelta,
  })
  const ended = performance.now()
  const doneReason = doneReasonOf(out.stopReason)
  if (doneReason === 'cancelled' && out.response === '' && !out.toolCalls) throw run.abortError()
  const result = timedResult(
    out.response,
    doneReason,
    out.promptTokens,
    completionTokens + (out.otherTokens ?? 0),
    {
      started,
      loadMs,
      generating,
      firstToken,
      ended,
    },
  )
  if (out.thinking) result.thinking = out.thinking
  if (out.toolCalls) result.toolCalls = out.toolCalls
  return result
}
