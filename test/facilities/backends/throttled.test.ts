import test from 'brittle'
import { ThrottledSource } from '../../../facilities/backends/throttled.js'
import type {
  ChatRequest,
  GenerateCallbacks,
  GenerationDelta,
  GenerationResult,
  InferenceSource,
} from '../../../kernel/wire.js'

const call = { id: 'c1', name: 'look', arguments: { q: 'x' } }

/**
 * A source that streams reasoning, two pieces of text and a tool call the way the contract
 * says (through `onDelta` when given, in the result without it), and waits on `gate` before
 * the call when one is given.
 */
function source(gate?: Promise<void>): InferenceSource & { sawOnDelta: boolean[] } {
  const sawOnDelta: boolean[] = []
  const chat = async (_req: ChatRequest, cb: GenerateCallbacks = {}): Promise<GenerationResult> => {
    sawOnDelta.push(cb.onDelta !== undefined)
    cb.onDelta?.({ thinking: 'hmm' })
    cb.onToken?.('let me')
    cb.onToken?.(' check')
    if (gate) await gate
    cb.onDelta?.({ toolCalls: [call] })
    const result: GenerationResult = {
      text: 'let me check',
      doneReason: 'stop',
      promptTokens: 1,
      completionTokens: 3,
      totalMs: 0,
      loadMs: 0,
      promptEvalMs: 0,
      evalMs: 0,
      toolCalls: [call],
    }
    if (!cb.onDelta) result.thinking = 'hmm'
    return result
  }
  const none = async () => {
    throw new Error('not used')
  }
  return {
    sawOnDelta,
    chat,
    generate: none,
    listModels: none,
    showModel: none,
    runningModels: none,
    embed: none,
  }
}

const req: ChatRequest = { model: 'm', messages: [{ role: 'user', content: 'hi' }] }
type Event = ['token', string] | ['delta', GenerationDelta]

test('throttled: reasoning and tool calls stream through onDelta, in order with the paced text', async (t) => {
  const inner = source()
  const events: Event[] = []
  const result = await new ThrottledSource(inner, { tokensPerSecond: 200 }).chat(req, {
    onToken: (text) => events.push(['token', text]),
    onDelta: (d) => events.push(['delta', d]),
  })
  t.alike(inner.sawOnDelta, [true], 'the source is given onDelta')
  t.alike(events, [
    ['delta', { thinking: 'hmm' }],
    ['token', 'let me'],
    ['token', ' check'],
    ['delta', { toolCalls: [call] }],
  ])
  t.is(result.text, 'let me check')
  t.alike(result.toolCalls, [call])
})

test('throttled: without onDelta the source is not given one, and its result keeps the reasoning', async (t) => {
  const inner = source()
  const result = await new ThrottledSource(inner, { tokensPerSecond: 200 }).chat(req, { onToken: () => {} })
  t.alike(inner.sawOnDelta, [false])
  t.is(result.thinking, 'hmm')
})

test('throttled: cancelled, what was handed out (reasoning and text) stays handed out', async (t) => {
  let open = () => {}
  const inner = source(new Promise<void>((r) => (open = r)))
  const controller = new AbortController()
  const events: Event[] = []
  const run = new ThrottledSource(inner, { tokensPerSecond: 1000 }).chat(req, {
    signal: controller.signal,
    onToken: (text) => {
      events.push(['token', text])
      if (text === ' check') controller.abort()
    },
    onDelta: (d) => events.push(['delta', d]),
  })
  open()
  const result = await run
  t.is(result.doneReason, 'cancelled')
  t.is(result.text, 'let me check')
  t.alike(events.slice(0, 3), [
    ['delta', { thinking: 'hmm' }],
    ['token', 'let me'],
    ['token', ' check'],
  ])
})
