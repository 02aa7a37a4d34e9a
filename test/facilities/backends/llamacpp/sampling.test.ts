/**
 * Penalties and seeds on llama.cpp, with `spread` tiny models: each letter predicts its
 * successor and, half a logit lower, the successor's other case. Greedy text is the plain
 * model's; a penalty on a successor already generated flips the case; sampling at
 * temperature 1 picks a case per letter, so the seed decides the text.
 */
import test from 'brittle'
import type { GenerationOptions } from '../../../../kernel/wire.js'
import { rejectsWith } from '../../../helpers/assert.js'
import { GREEDY, STEP1_TEXT, tinyBackend } from './tiny-backend.js'

const SPREAD = 'spread'
const SPREAD_LOOP = 'spread-loop'
const variants = { [SPREAD]: { spread: true }, [SPREAD_LOOP]: { spread: true, loop: true } }
/** The looping model's 30 greedy tokens after `x`: the alphabet once, then again from `y`. */
const LOOPED = 'yzabcdefghijklmnopqrstuvwxyzab'
/** The same once the letters already generated are penalised: from the 27th on, the other case wins. */
const FLIPPED = 'yzabcdefghijklmnopqrstuvwxYZAB'

test('llamacpp sampling: presence and frequency penalties flip a repeated letter, within repeat_last_n', async (t) => {
  const backend = await tinyBackend(t, variants)
  // No multiplicative penalty, so only the ones under test act.
  const loop = (options: GenerationOptions) =>
    backend.generate({
      model: SPREAD_LOOP,
      prompt: 'x',
      raw: true,
      options: { ...GREEDY, repeat_penalty: 1, num_predict: 30, ...options },
    })
  t.is((await loop({})).text, LOOPED, 'no penalty: the loop repeats')
  t.is((await loop({ presence_penalty: 1 })).text, FLIPPED, 'presence_penalty 1 > the half-logit gap')
  t.is((await loop({ frequency_penalty: 1 })).text, FLIPPED, 'frequency_penalty: once used, penalised once')
  t.is((await loop({ presence_penalty: 0.25 })).text, LOOPED, 'a penalty below the gap changes nothing')
  t.is(
    (await loop({ presence_penalty: 1, repeat_last_n: 4 })).text,
    LOOPED,
    'repeat_last_n 4: y is out of sight',
  )
  t.is(
    (await loop({ presence_penalty: 1, repeat_last_n: -1 })).text,
    FLIPPED,
    'repeat_last_n -1: the whole context',
  )
  t.is((await loop({ presence_penalty: 1, repeat_last_n: 0 })).text, LOOPED, 'repeat_last_n 0: no penalties')

  const chat = await backend.chat({
    model: SPREAD_LOOP,
    messages: [{ role: 'user', content: 'x' }],
    options: { ...GREEDY, repeat_penalty: 1, num_predict: 30, presence_penalty: 1 },
  })
  t.is(chat.text, FLIPPED, 'chat applies them too')

  const bad: Array<[string, GenerationOptions]> = [
    ['presence_penalty above 2', { presence_penalty: 2.5 }],
    ['frequency_penalty below -2', { frequency_penalty: -3 }],
    ['repeat_last_n below -1', { repeat_last_n: -2 }],
    ['repeat_last_n not an integer', { repeat_last_n: 1.5 }],
  ]
  for (const [what, options] of bad) await rejectsWith(t, loop(options), 'ERR_BAD_REQUEST', what)
})

test('llamacpp sampling: the same seed gives the same text, other seeds other texts', async (t) => {
  const backend = await tinyBackend(t, variants)
  const sample = (seed: number) =>
    backend.chat({
      model: SPREAD,
      messages: [{ role: 'user', content: 'a' }],
      options: { temperature: 1, top_k: 0, top_p: 1, repeat_penalty: 1, seed },
    })
  const first = await sample(42)
  const again = await sample(42)
  t.is(again.text, first.text, `seed 42 twice: '${first.text}'`)
  t.is(first.text.toLowerCase(), `b${'cdefghijklmnopqrstuvwxyz'}`, 'only the case is sampled')
  const texts = new Set<string>()
  for (const seed of [1, 2, 3, 4, 5]) texts.add((await sample(seed)).text)
  t.ok(texts.size > 1, `seeds 1 to 5 gave ${texts.size} different texts`)

  const greedy = await backend.chat({
    model: SPREAD,
    messages: [{ role: 'user', content: 'abc' }],
    options: GREEDY,
  })
  t.is(greedy.text, STEP1_TEXT, 'greedy text is the plain model’s')
})
