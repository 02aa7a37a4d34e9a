import type { Test } from 'brittle'
import OpenAI from 'openai'
import { MeshError } from '../../../kernel/errors.js'
import type {
  ChatRequest,
  ChoiceResult,
  DoneReason,
  GenerateCallbacks,
  GenerateRequest,
  GenerationResult,
  InferenceSource,
  TokenLogprob,
  ToolCall,
} from '../../../kernel/wire.js'
import { serveOpenAI } from './stand-in-source.js'

export const MODEL = 'scripted'

/** What one choice of the next answer holds. */
export interface ScriptedChoice {
  /** The answer's text, in the pieces it streams in. */
  pieces?: string[]
  thinking?: string
  toolCalls?: ToolCall[]
  /** How many of its calls a delta carries (default all); the rest are in the result only, as a throttled processor gives them. */
  streamedCalls?: number
  logprobs?: TokenLogprob[]
  doneReason?: DoneReason
}

/**
 * An InferenceSource that answers as scripted, as the contract says a source does: streamed,
 * reasoning first (one delta), then the text pieces (the choices' pieces taking turns, each
 * with its choice's index when there are several), then each choice's log probabilities and
 * its tool calls (one delta each, holding the first `streamedCalls`); a streamed result carries the tool calls but neither the
 * reasoning nor the log probabilities. Several choices make a result with `choices` whose
 * counts are the sums. Remembers every request, exactly as it was given.
 */
export class ScriptedSource implements InferenceSource {
  script: ScriptedChoice[] = [{ pieces: ['ok'] }]
  /** Scripts for the next requests, one each, before `script` again. */
  queue: ScriptedChoice[][] = []
  /** Thrown before anything is streamed, as a backend refuses what it cannot honour. */
  failBefore: MeshError | null = null
  /** Thrown once everything scripted was streamed, instead of the result. */
  failAfter: MeshError | null = null
  requests: (ChatRequest | GenerateRequest)[] = []

  get last(): ChatRequest | GenerateRequest | undefined {
    return this.requests.at(-1)
  }

  listModels = async () => []
  showModel = async (name: string) => {
    throw MeshError.modelNotFound(name)
  }
  runningModels = async () => []
  embed: InferenceSource['embed'] = async (req) => {
    throw MeshError.modelNotFound(req.model)
  }
  chat: InferenceSource['chat'] = async (req, cb) => this.run(req, cb)
  generate: InferenceSource['generate'] = async (req, cb) => this.run(req, cb)

  private run(req: ChatRequest | GenerateRequest, cb: GenerateCallbacks = {}): GenerationResult {
    this.requests.push(structuredClone(req))
    if (req.model !== MODEL) throw MeshError.modelNotFound(req.model)
    if (this.failBefore) throw this.failBefore
    const script = this.queue.shift() ?? this.script
    const several = script.length > 1
    const indexOf = (i: number) => (several ? { index: i } : {})
    const streamed = cb.onToken !== undefined
    script.forEach((c, i) => {
      if (c.thinking) cb.onDelta?.({ ...indexOf(i), thinking: c.thinking })
    })
    const longest = Math.max(...script.map((c) => c.pieces?.length ?? 0))
    for (let k = 0; k < longest; k++) {
      script.forEach((c, i) => {
        const piece = c.pieces?.[k]
        if (piece !== undefined) cb.onToken?.(piece, several ? i : undefined)
      })
    }
    script.forEach((c, i) => {
      if (c.logprobs) cb.onDelta?.({ ...indexOf(i), logprobs: c.logprobs })
      const streamedCalls = c.toolCalls?.slice(0, c.streamedCalls)
      if (streamedCalls?.length) cb.onDelta?.({ ...indexOf(i), toolCalls: streamedCalls })
    })
    if (this.failAfter) throw this.failAfter
    const choices = script.map((c, i) => choiceOf(c, i, streamed))
    const first = choices[0] as ChoiceResult
    const { index: _, ...own } = first
    return {
      ...own,
      promptTokens: choices.reduce((n, c) => n + c.promptTokens, 0),
      completionTokens: choices.reduce((n, c) => n + c.completionTokens, 0),
      totalMs: 2,
      loadMs: 0,
      promptEvalMs: 1,
      evalMs: 1,
      ...(several ? { choices } : {}),
    }
  }
}

/** One choice of the result: 5 prompt tokens, a completion token per piece. */
function choiceOf(c: ScriptedChoice, index: number, streamed: boolean): ChoiceResult {
  const pieces = c.pieces ?? []
  return {
    index,
    text: pieces.join(''),
    doneReason: c.doneReason ?? 'stop',
    promptTokens: 5,
    completionTokens: pieces.length,
    ...(c.toolCalls ? { toolCalls: c.toolCalls } : {}),
    ...(c.thinking && !streamed ? { thinking: c.thinking } : {}),
    ...(c.logprobs && !streamed ? { logprobs: c.logprobs } : {}),
  }
}

/** The OpenAI routes over a new ScriptedSource on a loopback port, with the official client pointed at them. */
export async function serveScripted(t: Test) {
  const source = new ScriptedSource()
  const url = await serveOpenAI(t, source)
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 })
  return { source, url, client }
}

/** POSTs `body` as JSON to the server at `url`. */
export function post(url: string, path: string, body: unknown): Promise<Response> {
  return fetch(`${url}${path}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  })
}

/** The data of every SSE event of a streamed answer but [DONE], parsed; fails unless [DONE] ends it. */
export async function sseEvents(res: Response): Promise<Record<string, unknown>[]> {
  const events = (await res.text()).split('\n\n').filter((e) => e !== '')
  const last = events.pop()
  if (last !== 'data: [DONE]') throw new Error(`the stream ended with ${last}`)
  return events.map((e) => JSON.parse(e.slice('data: '.length)) as Record<string, unknown>)
}

/** The OpenAI error of a refused request: its status, code and param. */
export async function refusal(res: Response) {
  const body = (await res.json()) as { error: { code: string; param: string | null; message: string } }
  return { status: res.status, code: body.error.code, param: body.error.param }
}
