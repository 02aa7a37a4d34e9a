/**
 * An InferenceSource that answers a script — reasoning, text pieces with their log
 * probabilities, tool calls — the way the contract says a source does: with `onDelta`, each
 * piece's reasoning and log probabilities as deltas before its text and each call in a delta of
 * its own (the calls in the result too); without it, all in the result. Remembers the requests.
 * And the Ollama-protocol server over it, which remembers the bodies it was sent.
 */
import type { Test } from 'brittle'
import { OllamaCompatServer } from '../../../facilities/http/ollama-api.js'
import { MeshError } from '../../../kernel/errors.js'
import type {
  ChatRequest,
  GenerateCallbacks,
  GenerateRequest,
  GenerationResult,
  InferenceSource,
  ModelInfo,
  TokenLogprob,
  ToolCall,
} from '../../../kernel/wire.js'

export const MODEL = 'scripted'

export interface Script {
  thinking: string[]
  text: string[]
  /** One per text piece, when log probabilities were asked for. */
  logprobs: TokenLogprob[]
  calls: ToolCall[]
  /** The calls in the result only, never in a delta (a source that does not stream them). */
  callsInResultOnly?: boolean
}

export const SCRIPT: Script = {
  thinking: ['Paris is ', 'in France.'],
  text: ['Let me ', 'check.'],
  logprobs: [
    {
      token: 'Let me ',
      logprob: -0.25,
      bytes: [76, 101, 116, 32, 109, 101, 32],
      top: [
        { token: 'Let me ', logprob: -0.25 },
        { token: 'I', logprob: -2 },
      ],
    },
    { token: 'check.', logprob: -0.5, top: [{ token: 'check.', logprob: -0.5 }] },
  ],
  calls: [
    { id: 'call_a', name: 'get_weather', arguments: { city: 'Paris' } },
    { id: 'call_b', name: 'get_time', arguments: { zone: 'CET' } },
  ],
}

const INFO: ModelInfo = {
  name: MODEL,
  size: 1,
  digest: 'b'.repeat(64),
  modifiedAt: '2026-01-02T03:04:05.000Z',
  details: { format: 'gguf', family: 'x', families: ['x'], parameterSize: '1', quantizationLevel: 'F32' },
}

export class ScriptedSource implements InferenceSource {
  script: Script = SCRIPT
  /** Thrown before anything is produced, when set. */
  refuse: MeshError | null = null
  readonly requests: Array<ChatRequest | GenerateRequest> = []

  get last(): ChatRequest | GenerateRequest | undefined {
    return this.requests.at(-1)
  }

  listModels = async () => [INFO]
  showModel = async () => ({ ...INFO, template: '', parameters: '', modelInfo: {}, capabilities: ['tools'] })
  runningModels = async () => []
  embed: InferenceSource['embed'] = async () => ({ embeddings: [], promptTokens: 0, totalMs: 0, loadMs: 0 })
  chat: InferenceSource['chat'] = async (req, cb) => this.answer(req, cb, true)
  generate: InferenceSource['generate'] = async (req, cb) => this.answer(req, cb, false)

  private answer(
    req: ChatRequest | GenerateRequest,
    cb: GenerateCallbacks = {},
    chat = false,
  ): GenerationResult {
    this.requests.push(req)
    if (req.model !== MODEL) throw MeshError.modelNotFound(req.model)
    if (this.refuse) throw this.refuse
    const s = this.script
    const thinking = req.think ? s.thinking : []
    const logprobs = req.logprobs !== undefined ? s.logprobs : []
    const calls = chat && (req as ChatRequest).tools?.length ? s.calls : []
    const { onToken, onDelta } = cb
    if (onDelta) for (const t of thinking) onDelta({ thinking: t })
    s.text.forEach((text, i) => {
      const l = logprobs[i]
      if (onDelta && l) onDelta({ logprobs: [l] })
      onToken?.(text)
    })
    if (onDelta && !s.callsInResultOnly) for (const c of calls) onDelta({ toolCalls: [c] })
    const result: GenerationResult = {
      text: s.text.join(''),
      doneReason: 'stop',
      promptTokens: 5,
      completionTokens: thinking.length + s.text.length,
      totalMs: 3,
      loadMs: 0,
      promptEvalMs: 1,
      evalMs: 2,
    }
    if (calls.length > 0) result.toolCalls = calls
    if (!onDelta && thinking.length > 0) result.thinking = thinking.join('')
    if (!onDelta && logprobs.length > 0) result.logprobs = logprobs
    return result
  }
}

/** The Ollama-protocol server over a scripted source on a loopback port; `bodies` are what it was sent. */
export async function serveScripted(
  t: Test,
): Promise<{ url: string; source: ScriptedSource; bodies: Array<[string, Record<string, unknown>]> }> {
  const source = new ScriptedSource()
  const bodies: Array<[string, Record<string, unknown>]> = []
  const server = new OllamaCompatServer({ source, onRequest: (path, body) => bodies.push([path, body]) })
  t.teardown(() => server.close())
  await server.listen()
  return { url: server.url, source, bodies }
}
