import test from 'brittle'
import { TINY_MODEL_NAME } from '../../facilities/tiny-model/tiny-model.js'
import { apiKeyFor, spawnTinyProcessor, startGateway, testnet, until } from '../helpers/mesh.js'

/** Alice's two embeds: the most inputs a request may have, each of 64 bytes (15–25 s each here, both at once). */
const INPUTS = 2048
const INPUT_BYTES = 64
/**
 * The inputs' last characters, in turn. The tiny model's vector of a text is that of its last
 * token, so the vector at each position says which input it came from (up to 62 apart).
 */
const LAST = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'
/** How long Bob's small requests may wait: generous for a busy 2-core machine (~1 s seen). */
const BOB_BOUND_MS = 5_000

interface EmbedAnswer {
  embeddings: number[][]
  prompt_eval_count: number
}

async function post<T>(url: string, key: string, body: unknown): Promise<T> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  })
  if (!res.ok) throw new Error(`${url}: ${res.status} ${await res.text()}`)
  return (await res.json()) as T
}

/** Resolves with how long `work` took, in ms. */
async function timed(work: Promise<unknown>): Promise<number> {
  const started = performance.now()
  await work
  return performance.now() - started
}

const sameVector = (a: number[] | undefined, b: number[] | undefined) =>
  a !== undefined &&
  b !== undefined &&
  a.length === b.length &&
  a.every((x, i) => Math.abs(x - (b[i] ?? 0)) < 1e-6)

test('fairness: a user holding every slot with long embeds does not keep another user waiting', {
  timeout: 240_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, { http: { enabled: true, port: 0 } })
  await spawnTinyProcessor(t, bootstrap, ['--parallel', '2'])
  t.ok(await until(() => gateway.router.size === 1), 'the gateway sees the processor')
  const url = gateway.httpUrl as string
  const [admin, alice, bob] = await Promise.all([
    apiKeyFor(gateway),
    apiKeyFor(gateway, 'alice', 'user'),
    apiKeyFor(gateway, 'bob', 'user'),
  ])
  const embed = (key: string, input: string[]) =>
    post<EmbedAnswer>(`${url}/api/embed`, key, { model: TINY_MODEL_NAME, input })

  // The vector of each last character (and the model loaded before anything is timed).
  const reference = await embed(admin, [...LAST])
  const perInput = reference.prompt_eval_count / LAST.length - 1
  const inputs = (tag: string) =>
    Array.from(
      { length: INPUTS },
      (_, i) => `${tag}${i}.`.padEnd(INPUT_BYTES - 1, '-') + LAST[i % LAST.length],
    )

  // Alice: two long embeds, one per slot.
  const aliceStarted = performance.now()
  const aliceRuns = [embed(alice, inputs('x')), embed(alice, inputs('y'))]
  const aliceMs = aliceRuns.map((run) => run.then(() => performance.now() - aliceStarted))
  t.ok(
    await until(() => gateway.router.list()[0]?.inflight === 2, 10_000, 5),
    "Alice's embeds hold both slots",
  )

  // Bob: a small embed and a small generate, while Alice's are far from done.
  const [bobEmbedMs, bobGenerateMs] = await Promise.all([
    timed(embed(bob, ['hello'])),
    timed(
      post(`${url}/api/generate`, bob, {
        model: TINY_MODEL_NAME,
        prompt: 'abc',
        stream: false,
        options: { temperature: 0, num_predict: 8 },
      }),
    ),
  ])
  t.ok(bobEmbedMs < BOB_BOUND_MS, `Bob's embed answered in ${Math.round(bobEmbedMs)} ms`)
  t.ok(bobGenerateMs < BOB_BOUND_MS, `Bob's generate answered in ${Math.round(bobGenerateMs)} ms`)

  const answers = await Promise.all(aliceRuns)
  const took = await Promise.all(aliceMs)
  const bobMs = Math.max(bobEmbedMs, bobGenerateMs)
  t.ok(
    took.every((ms) => ms > 2 * bobMs),
    `Alice's took much longer: ${took.map((ms) => Math.round(ms))} ms`,
  )

  // Every vector, in the order of the inputs, and the prompt tokens of all of them.
  for (const [n, answer] of answers.entries()) {
    t.is(answer.embeddings.length, INPUTS, `embed ${n + 1}: a vector per input`)
    const misplaced = answer.embeddings.findIndex(
      (v, i) => !sameVector(v, reference.embeddings[i % LAST.length]),
    )
    t.is(misplaced, -1, `embed ${n + 1}: each vector at its input's place`)
    t.is(
      answer.prompt_eval_count,
      INPUTS * (INPUT_BYTES + perInput),
      `embed ${n + 1}: prompt tokens of every input`,
    )
  }

  // One usage record per request, with the whole request's tokens.
  const recordsOf = async (username: string) => {
    const user = gateway.auth?.user(username)
    return user ? ((await gateway.usage?.records(user.id, 0, Date.now() + 1)) ?? []) : []
  }
  const aliceRecords = await recordsOf('alice')
  t.is(aliceRecords.length, 2, "one record per Alice's embed")
  t.alike(
    aliceRecords.map((r) => [r.status, r.promptTokens]),
    answers.map((a) => ['ok', a.prompt_eval_count]),
    'each with the prompt tokens of its 2,048 inputs',
  )
  t.is((await recordsOf('bob')).length, 2, "one record per Bob's request")

  // A caller that goes away stops the batches not yet sent: its slot is free within a batch.
  const abort = new AbortController()
  const gone = fetch(`${url}/api/embed`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${alice}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: TINY_MODEL_NAME, input: inputs('z') }),
    signal: abort.signal,
  }).catch(() => 'aborted')
  t.ok(await until(() => gateway.router.list()[0]?.inflight === 1, 10_000, 5), 'a third long embed runs')
  await new Promise((r) => setTimeout(r, 300))
  abort.abort()
  const abortedAt = performance.now()
  t.is(await gone, 'aborted', 'the caller went away')
  t.ok(
    await until(() => gateway.router.list()[0]?.inflight === 0, BOB_BOUND_MS, 5),
    `its slot is free ${Math.round(performance.now() - abortedAt)} ms after the caller left`,
  )
  t.ok(
    await until(async () => (await recordsOf('alice')).some((r) => r.status === 'cancelled')),
    'and its record says cancelled',
  )
})
