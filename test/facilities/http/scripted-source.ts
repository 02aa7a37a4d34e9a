import type { Test } from 'brittle'
import { HttpFacility } from '../../../facilities/http/http.facility.js'
import type { HttpApi, HttpMetrics } from '../../../facilities/http/observed.js'
import { LogFacility } from '../../../facilities/log.facility.js'
import { MeshError } from '../../../kernel/errors.js'
import type {
  ChatRequest,
  DoneReason,
  GenerateCallbacks,
  GenerationResult,
  InferenceSource,
  ToolCall,
} from '../../../kernel/wire.js'

export const MODEL = 'scripted'
/** The one key the test gateway takes. */
export const KEY = 'sk-test-key'

/** What the source answers next: reasoning, text and tool calls, in that order. */
export interface Script {
  thinking?: string[]
  tokens?: string[]
  toolCalls?: ToolCall[]
  doneReason?: DoneReason
  /** Thrown before anything is produced. */
  failBefore?: MeshError
  /** Thrown after the text. */
  failAfter?: MeshError
}

/**
 * An InferenceSource that answers chat requests as scripted, the way the contract says a
 * backend does: streamed (callbacks given), reasoning and each finished tool call come as
 * deltas and the result carries the calls but no reasoning; whole, the result carries both.
 * Remembers every chat request it was sent.
 */
export class ScriptedSource implements InferenceSource {
  script: Script = { tokens: ['Hel', 'lo'] }
  readonly requests: ChatRequest[] = []

  get last(): ChatRequest | undefined {
    return this.requests.at(-1)
  }

  listModels = async () => []
  showModel = async (name: string): Promise<never> => {
    throw MeshError.modelNotFound(name)
  }
  runningModels = async () => []
  embed = async (): Promise<never> => {
    throw MeshError.unsupported('embed')
  }
  generate = async (): Promise<never> => {
    throw MeshError.unsupported('generate')
  }

  chat = async (req: ChatRequest, cb: GenerateCallbacks = {}): Promise<GenerationResult> => {
    this.requests.push(req)
    if (req.model !== MODEL) throw MeshError.modelNotFound(req.model)
    const s = this.script
    if (s.failBefore) throw s.failBefore
    const streamed = cb.onToken !== undefined
    for (const t of s.thinking ?? []) cb.onDelta?.({ thinking: t })
    for (const t of s.tokens ?? []) cb.onToken?.(t)
    if (s.failAfter) throw s.failAfter
    for (const c of s.toolCalls ?? []) cb.onDelta?.({ toolCalls: [c] })
    const result: GenerationResult = {
      text: (s.tokens ?? []).join(''),
      doneReason: s.doneReason ?? 'stop',
      promptTokens: 5,
      completionTokens: 7,
      totalMs: 2,
      loadMs: 0,
      promptEvalMs: 1,
      evalMs: 1,
    }
    if (s.thinking?.length && !streamed) result.thinking = s.thinking.join('')
    if (s.toolCalls?.length) result.toolCalls = s.toolCalls
    return result
  }
}

/** The requests the gateway counted, by API and outcome. */
export class CountedMetrics implements HttpMetrics {
  readonly requests: { api: HttpApi; code: string }[] = []
  contentType = 'text/plain'
  request(api: HttpApi, code: string): void {
    this.requests.push({ api, code })
  }
  firstToken(): void {}
  overhead(): void {}
  text = async () => ''
}

/**
 * The gateway's HTTP facility over `source` on a loopback port, taking only `KEY` (as a
 * bearer credential, or `x-api-key` where that counts); closed on teardown.
 */
export async function serveGateway(
  t: Test,
  source: InferenceSource,
  metrics: HttpMetrics | null = null,
): Promise<string> {
  const http = new HttpFacility({
    host: '127.0.0.1',
    port: 0,
    maxBodyBytes: 256 * 1024,
    logger: new LogFacility({ level: 'silent' }).logger,
    authenticate: (token) => {
      if (token === undefined) throw new MeshError('ERR_AUTH_REQUIRED', 'an API key is required')
      if (token !== KEY) throw new MeshError('ERR_AUTH_INVALID', 'invalid API key')
      return null
    },
    sourceFor: () => source,
    metrics,
  })
  t.teardown(() => http.close())
  await http.ready()
  return http.url
}
