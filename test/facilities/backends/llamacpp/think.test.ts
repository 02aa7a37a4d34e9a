/**
 * `think` on llama.cpp. The `think` tiny model reasons after a '9' (`<think>abc…z</think>`,
 * then answers `ABC…Z`) and its chat template has a place for reasoning, so node-llama-cpp
 * reads thought segments; the plain tiny model has none, so reasoning asked of it is refused.
 */
import test from 'brittle'
import { TINY_MODEL_NAME } from '../../../../facilities/tiny-model/tiny-model.js'
import type { ChatRequest } from '../../../../kernel/wire.js'
import { rejectsWith } from '../../../helpers/assert.js'
import { collected, GREEDY, tinyBackend } from './tiny-backend.js'

const THINKER = 'thinker'
const THOUGHT = 'abcdefghijklmnopqrstuvwxyz'
const ANSWER = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ'
const ask: ChatRequest = { model: THINKER, messages: [{ role: 'user', content: '9' }], options: GREEDY }

test('llamacpp think: reasoning apart from the answer, whole and streamed; off when false', async (t) => {
  const backend = await tinyBackend(t, { [THINKER]: { think: true } })
  for (const think of [true, 'low', 'high'] as const) {
    const r = await backend.chat({ ...ask, think })
    t.is(r.text, ANSWER, `think ${think}: the answer alone in the text`)
    t.is(r.thinking, THOUGHT, `think ${think}: the reasoning apart`)
    t.is(r.completionTokens, THOUGHT.length + ANSWER.length, 'both count as generated')
  }

  const { result, pieces, deltas } = await collected((cb) => backend.chat({ ...ask, think: true }, cb))
  t.is(pieces.join(''), ANSWER, 'streamed: text pieces are the answer')
  t.is(deltas.map((d) => d.thinking ?? '').join(''), THOUGHT, 'and deltas the reasoning')
  t.is(result.thinking, undefined, 'which the streamed result does not repeat')

  const off = await backend.chat({ ...ask, think: false })
  t.is(off.text, ANSWER, 'think false: the answer')
  t.is(off.thinking, undefined, 'without reasoning')
  t.is(off.completionTokens, ANSWER.length, 'none was generated: its budget is 0')

  const unasked = await backend.chat(ask)
  t.is(unasked.text, ANSWER, 'think unset: the model reasons as it likes')
  t.is(unasked.thinking, undefined, 'but the reasoning is not returned')

  const templated = await backend.generate({ model: THINKER, prompt: '9', think: true, options: GREEDY })
  t.is(templated.thinking, THOUGHT, 'templated generate too')
  const replayed = await backend.chat({
    ...ask,
    think: true,
    messages: [
      { role: 'user', content: '9' },
      { role: 'assistant', content: ANSWER, thinking: THOUGHT },
      { role: 'user', content: '9' },
    ],
  })
  t.is(replayed.thinking, THOUGHT, 'a history with past reasoning')
})

test('llamacpp think: refused where it cannot be honoured', async (t) => {
  const backend = await tinyBackend(t, { [THINKER]: { think: true } })
  const messages = [{ role: 'user' as const, content: 'abc' }]
  const refusals: Array<[string, () => Promise<unknown>]> = [
    [
      'a model without a reasoning section',
      () => backend.chat({ model: TINY_MODEL_NAME, messages, think: true }),
    ],
    ['an effort on such a model', () => backend.chat({ model: TINY_MODEL_NAME, messages, think: 'high' })],
    ['a raw prompt', () => backend.generate({ model: THINKER, prompt: '9', raw: true, think: true })],
    ['with format', () => backend.chat({ ...ask, think: true, format: { type: 'json' } })],
    [
      'with a forced tool call',
      () =>
        backend.chat({
          ...ask,
          think: true,
          tools: [{ type: 'function', function: { name: 'ping' } }],
          toolChoice: 'required',
        }),
    ],
  ]
  for (const [what, run] of refusals) {
    const err = await rejectsWith(t, run(), 'ERR_UNSUPPORTED', what)
    t.is(err?.details?.param, 'think', `${what}: names think`)
  }
  const off = await backend.chat({ model: TINY_MODEL_NAME, messages, think: false, options: GREEDY })
  t.is(off.text, 'defghijklmnopqrstuvwxyz', 'think false asks nothing of a model that cannot reason')
  await rejectsWith(
    t,
    backend.chat({ model: TINY_MODEL_NAME, messages, think: 'hard' as never }),
    'ERR_BAD_REQUEST',
    'an effort that is none',
  )
})
