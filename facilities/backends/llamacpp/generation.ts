/**
 * One generation on one context sequence: the token loop of LlamaChat or
 * LlamaCompletion, streaming text to the caller, counting tokens and timing
 * the prompt and the generation.
 */
import {
  type ChatHistoryItem,
  LlamaChat,
  LlamaCompletion,
  type LlamaContextSequence,
  type Token,
} from 'node-llama-cpp'
import type { MeshError } from '../../../kernel/errors.js'
import type { DoneReason, GenerationResult } from '../../../kernel/wire.js'
import { timedResult } from '../generation-stats.js'
import type { LoadedModel } from './loaded-models.js'
import { chatPromptTokens, rawPromptTokens } from './prompting.js'
import { type SamplingPlan, samplingOptions } from './sampling.js'
import { tailOf, withinContext } from './text-limits.js'

/** What a token loop returns, before counting and timing. */
interface RawOutput {
  response: string
  stopReason: string
  /** Tokens of the whole prompt (cached prefix included), as Ollama's prompt_eval_count. */
  promptTokens: number
}

interface GenerationHooks {
  signal: AbortSignal
  onTextChunk(text: string): void
  onToken(tokens: Token[]): void
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

/** A chat over `history` through the model's chat template. */
export function chatProducer(history: ChatHistoryItem[], plan: SamplingPlan, contextSize: number): Producer {
  return async (seq, lm, hooks) => {
    const fitted = withinContext(history, lm.maxInputChars)
    const chat = new LlamaChat({
      contextSequence: seq,
      chatWrapper: lm.chatWrapper,
      autoDisposeSequence: false,
    })
    const promptTokens = chatPromptTokens(lm.model, lm.chatWrapper, fitted, contextSize)
    try {
      const res = await chat.generateResponse(fitted, {
        ...samplingOptions(plan, contextSize),
        ...hooks,
        stopOnAbortSignal: true,
      })
      return { response: res.response, stopReason: res.metadata.stopReason, promptTokens }
    } finally {
      chat.dispose({ disposeSequence: false })
    }
  }
}

/** A plain-text continuation of `text` (a raw `generate`). */
export function completionProducer(text: string, plan: SamplingPlan, contextSize: number): Producer {
  return async (seq, lm, hooks) => {
    // The context keeps a long prompt's end; cut it before tokenizing (see text-limits.ts).
    const prompt = tailOf(text, lm.maxInputChars)
    const completion = new LlamaCompletion({ contextSequence: seq, autoDisposeSequence: false })
    const promptTokens = rawPromptTokens(lm.model, prompt, contextSize)
    try {
      const res = await completion.generateCompletionWithMeta(prompt, {
        ...samplingOptions(plan, contextSize),
        ...hooks,
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
    started: number
    loadMs: number
    abortError: () => MeshError
  },
): Promise<GenerationResult> {
  const { signal, onToken, started, loadMs } = run
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
      completionTokens += tokens.length
    },
  })
  const ended = performance.now()
  const doneReason = doneReasonOf(out.stopReason)
  if (doneReason === 'cancelled' && out.response === '') throw run.abortError()
  return timedResult(out.response, doneReason, out.promptTokens, completionTokens, {
    started,
    loadMs,
    generating,
    firstToken,
    ended,
  })
}
