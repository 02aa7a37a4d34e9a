/**
 * Sampling fields through the mesh, on llama.cpp and the tiny model (whose greedy text after
 * `abc` is `defghijklmnopqrstuvwxyz`): several `stop` strings end the answer at the first one
 * that appears, on both APIs, streamed or not, and the stop string itself is not returned.
 * With a `spread` tiny model (each letter predicts its successor and, half a logit lower, the
 * successor's other case), the seed decides the sampled text and a penalty flips a repeat.
 */
import { join } from 'node:path'
import test from 'brittle'
import { TINY_MODEL_NAME, writeTinyModel } from '../../facilities/tiny-model/tiny-model.js'
import { post } from '../helpers/http.js'
import {
  apiKeyFor,
  spawnProcessor,
  spawnTinyProcessor,
  startGateway,
  testnet,
  until,
} from '../helpers/mesh.js'

/** Stop strings, the earliest in the text last: the answer ends before `jkl`. */
const STOPS = ['xyz', 'qrs', 'jkl']

test('sampling: several stop strings end the answer at the first that appears', {
  timeout: 120_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, { http: { enabled: true, port: 0 } })
  await spawnTinyProcessor(t, bootstrap)
  t.ok(await until(() => gateway.router.size === 1, 30_000), 'the tiny processor serves')
  const url = gateway.httpUrl as string
  const key = await apiKeyFor(gateway)
  const messages = [{ role: 'user', content: 'abc' }]

  const openai = (await (
    await post(
      `${url}/v1/chat/completions`,
      { model: TINY_MODEL_NAME, messages, temperature: 0, stop: STOPS },
      key,
    )
  ).json()) as { choices: { message: { content: string }; finish_reason: string }[] }
  t.is(openai.choices[0]?.message.content, 'defghi', 'OpenAI: cut before the first stop string that appears')
  t.is(openai.choices[0]?.finish_reason, 'stop')

  const ollama = (await (
    await post(
      `${url}/api/chat`,
      { model: TINY_MODEL_NAME, messages, stream: false, options: { temperature: 0, stop: STOPS } },
      key,
    )
  ).json()) as { message: { content: string }; done_reason: string }
  t.is(ollama.message.content, 'defghi', 'Ollama: the same')
  t.is(ollama.done_reason, 'stop')

  const streamed = await post(
    `${url}/v1/chat/completions`,
    { model: TINY_MODEL_NAME, messages, temperature: 0, stop: STOPS, stream: true },
    key,
  )
  const text = (await streamed.text())
    .split('\n')
    .filter((l) => l.startsWith('data: {'))
    .map(
      (l) =>
        (JSON.parse(l.slice(6)) as { choices: { delta: { content?: string } }[] }).choices[0]?.delta
          .content ?? '',
    )
    .join('')
  t.is(text, 'defghi', 'streamed: no piece of the stop string reaches the client')

  const single = (await (
    await post(
      `${url}/v1/chat/completions`,
      { model: TINY_MODEL_NAME, messages, temperature: 0, stop: 'mno' },
      key,
    )
  ).json()) as { choices: { message: { content: string } }[] }
  t.is(single.choices[0]?.message.content, 'defghijkl', 'one stop string as a plain string')
})

const SPREAD = 'tiny-spread-loop'

test('sampling: the same seed gives the same text through the mesh, other seeds other texts; penalties act', {
  timeout: 120_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, { http: { enabled: true, port: 0 } })
  const models = await t.tmp()
  await writeTinyModel(join(models, `${SPREAD}.gguf`), { spread: true, loop: true })
  await spawnProcessor(t, bootstrap, ['--store', await t.tmp(), '--models', models, '--backend', 'llamacpp'])
  t.ok(await until(() => gateway.router.size === 1, 30_000), 'the spread processor serves')
  const url = gateway.httpUrl as string
  const key = await apiKeyFor(gateway)

  const openai = async (extra: Record<string, unknown>) => {
    const body = { model: SPREAD, messages: [{ role: 'user', content: 'x' }], max_tokens: 30, ...extra }
    const res = (await (await post(`${url}/v1/chat/completions`, body, key)).json()) as {
      choices: { message: { content: string } }[]
    }
    return res.choices[0]?.message.content ?? ''
  }
  const sampled = { temperature: 1, top_p: 1, top_k: 0, repeat_penalty: 1 }
  const first = await openai({ ...sampled, seed: 42 })
  t.is(await openai({ ...sampled, seed: 42 }), first, `OpenAI: seed 42 twice gives '${first}' twice`)
  const texts = new Set<string>()
  for (const seed of [1, 2, 3, 4, 5]) texts.add(await openai({ ...sampled, seed }))
  t.ok(texts.size > 1, `seeds 1 to 5 gave ${texts.size} different texts`)

  const ollama = async (seed: number) => {
    const body = {
      model: SPREAD,
      prompt: 'x',
      raw: true,
      stream: false,
      options: { ...sampled, seed, num_predict: 30 },
    }
    return ((await (await post(`${url}/api/generate`, body, key)).json()) as { response: string }).response
  }
  const o = await ollama(7)
  t.is(await ollama(7), o, 'Ollama: options.seed 7 twice, the same text')

  // Greedy on the looping model repeats the alphabet; a presence penalty on what it already
  // wrote makes the other case win once a letter comes round again.
  const greedy = { temperature: 0, repeat_penalty: 1 }
  const looped = await openai(greedy)
  const penalised = await openai({ ...greedy, presence_penalty: 1 })
  t.ok(/^[a-z]+$/.test(looped.replace(/\s/g, '')), `no penalty: lower case all along ('${looped}')`)
  t.not(penalised, looped, `presence_penalty 1 changes the repeat ('${penalised}')`)
  t.ok(/[A-Z]/.test(penalised), 'the repeated letters flip case')
})
