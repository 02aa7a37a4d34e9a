/**
 * Sampling fields through the mesh, on llama.cpp and the tiny model (whose greedy text after
 * `abc` is `defghijklmnopqrstuvwxyz`): several `stop` strings end the answer at the first one
 * that appears, on both APIs, streamed or not, and the stop string itself is not returned.
 */
import test from 'brittle'
import { TINY_MODEL_NAME } from '../../facilities/tiny-model/tiny-model.js'
import { post } from '../helpers/http.js'
import { apiKeyFor, spawnTinyProcessor, startGateway, testnet, until } from '../helpers/mesh.js'

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
