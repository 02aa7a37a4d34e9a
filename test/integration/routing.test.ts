import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import RPC from '@hyperswarm/rpc'
import test, { type Test } from 'brittle'
import { LlamaCppBackend } from '../../facilities/backends/llamacpp/llamacpp.backend.js'
import { OllamaCompatServer } from '../../facilities/http/ollama-api.js'
import { isLoaded } from '../../facilities/router/processor-entry.js'
import { TINY_MODEL_NAME, writeTinyModel } from '../../facilities/tiny-model/tiny-model.js'
import type { MeshError } from '../../kernel/errors.js'
import type { InferResult } from '../../kernel/inference.js'
import type { MeshClient } from '../../workers/client/client.worker.js'
import type { GatewayWorker } from '../../workers/gateway/gateway.worker.js'
import { rejectsWith } from '../helpers/assert.js'
import {
  apiKeyFor,
  type SpawnedProcessor,
  spawnProcessor,
  startClient,
  startGateway,
  testnet,
  until,
} from '../helpers/mesh.js'

const STEP1_TEXT = 'defghijklmnopqrstuvwxyz'
const LOOP_MODEL = 'looper'

interface Spec {
  tps?: number
  parallel?: number
  weight?: number
}

/** A models folder with the tiny model and the looping one (never stops by itself). */
async function modelsDir(t: Test): Promise<string> {
  const dir = await t.tmp()
  await writeTinyModel(join(dir, `${TINY_MODEL_NAME}.gguf`))
  await writeTinyModel(join(dir, `${LOOP_MODEL}.gguf`), { loop: true })
  return dir
}

/** A gateway with `routing`, llama.cpp processors as specified, and a client signed in as admin. */
async function mesh(t: Test, specs: Spec[], routing: Record<string, unknown> = {}) {
  const { bootstrap, net } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, { routing })
  const processors = await Promise.all(
    specs.map(async (spec) =>
      spawnProcessor(t, bootstrap, [
        '--store',
        await t.tmp(),
        '--models',
        await modelsDir(t),
        '--backend',
        'llamacpp',
        '--parallel',
        String(spec.parallel ?? 1),
        ...(spec.tps ? ['--throttle-tps', String(spec.tps)] : []),
        ...(spec.weight !== undefined ? ['--weight', String(spec.weight)] : []),
      ]),
    ),
  )
  const client = await startClient(t, bootstrap, {}, { apiKey: await apiKeyFor(gateway) })
  t.ok(
    await until(async () => (await client.status()).processors.length === specs.length),
    `the gateway sees all ${specs.length} processors`,
  )
  // The model loaded everywhere first: routing prefers loaded processors, and the strategies
  // are compared here among equals (a cold processor gets nothing while a loaded one is free).
  await client.modelOp('load', TINY_MODEL_NAME)
  t.ok(
    await until(() => loadedEverywhere(gateway, TINY_MODEL_NAME)),
    'the model is loaded on every processor',
  )
  return { bootstrap, net, gateway, processors, client }
}

const loadedEverywhere = (gateway: GatewayWorker, model: string) =>
  gateway.router.entriesFor(model).every((e) => isLoaded(e, model))

const ask = (client: MeshClient, extra: Record<string, unknown> = {}) =>
  client.chat({
    model: TINY_MODEL_NAME,
    messages: [{ role: 'user', content: 'abc' }],
    options: { temperature: 0 },
    ...extra,
  })

function countBy(results: InferResult[], processors: SpawnedProcessor[]): number[] {
  return processors.map((p) => results.filter((r) => r.processor === p.publicKey).length)
}

/** Runs `n` requests with `concurrency` in flight; returns the answers in completion order. */
async function load(client: MeshClient, n: number, concurrency: number): Promise<InferResult[]> {
  const out: InferResult[] = []
  let next = 0
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) {
        next++
        out.push(await ask(client))
      }
    }),
  )
  return out
}

test('routing: round-robin takes turns, whatever the speeds', { timeout: 120_000 }, async (t) => {
  const { client, processors } = await mesh(t, [{ tps: 400 }, { tps: 200 }, { tps: 100 }], {
    strategy: 'round-robin',
  })
  const results = await load(client, 12, 1)
  t.ok(
    results.every((r) => r.text === STEP1_TEXT),
    'every answer is the exact text',
  )
  t.alike(countBy(results, processors), [4, 4, 4], 'each processor 4 of 12')
})

test('routing: least-loaded gives more to processors that free up sooner', {
  timeout: 120_000,
}, async (t) => {
  const { client, processors } = await mesh(t, [{ tps: 400 }, { tps: 200 }, { tps: 60 }], {
    strategy: 'least-loaded',
  })
  const counts = countBy(await load(client, 30, 3), processors)
  const [fast, mid, slow] = counts as [number, number, number]
  t.is(fast + mid + slow, 30)
  t.ok(fast > mid && mid > slow, `fast > mid > slow: ${counts}`)
  t.ok(slow >= 1, 'the slow one still works its share')
})

test('routing: fastest learns the speeds and sends to the fastest', { timeout: 120_000 }, async (t) => {
  // Speeds far apart (23 tokens: ~1.2 s, ~60 ms, ~380 ms), so that a CPU stall on a busy
  // machine during the one measurement of the fast processor cannot rank it behind the middle
  // one (seen with 40/300/100 tokens/s: counts 1, 1, 13).
  const { client, processors, gateway } = await mesh(t, [{ tps: 20 }, { tps: 400 }, { tps: 60 }], {
    strategy: 'fastest',
  })
  const results = await load(client, 15, 1)
  const [slow, fast, mid] = countBy(results, processors) as [number, number, number]
  t.ok(slow >= 1 && mid >= 1, 'each unmeasured processor was tried')
  t.ok(fast >= 11, `the fastest took (nearly) all the rest: ${[slow, fast, mid]}`)
  const views = gateway.router.list()
  const speed = (p: SpawnedProcessor) =>
    views.find((v) => v.publicKey === p.publicKey)?.measuredTokensPerSecond ?? 0
  t.ok(
    speed(processors[1] as SpawnedProcessor) > speed(processors[0] as SpawnedProcessor),
    'measured speeds order',
  )
})

test('routing: random-weighted follows the processors weights', { timeout: 120_000 }, async (t) => {
  const { client, processors } = await mesh(t, [{ weight: 3 }, { weight: 1 }, { weight: 0 }], {
    strategy: 'random-weighted',
  })
  const [heavy, light, none] = countBy(await load(client, 120, 1), processors) as [number, number, number]
  t.is(none, 0, 'weight 0 gets nothing')
  // Weights 3:1: heavy ~ Binomial(120, 0.75), mean 90, sd 4.7. 72..105 holds with probability
  // > 99.8%; equal weights (mean 60) would pass it less than 2% of the time. (The bounds were
  // 1.8x..5x light, i.e. 78..99, which a fair 3:1 draw misses ~3% of the time: seen as 102:18.)
  t.ok(heavy >= 72 && heavy <= 105, `about 3:1: ${heavy}:${light}`)
})

test('resilience: killing a processor mid-load loses no non-streamed request', {
  timeout: 120_000,
}, async (t) => {
  const { client, processors } = await mesh(t, [
    { tps: 100, parallel: 2 },
    { tps: 100, parallel: 2 },
    { tps: 100, parallel: 2 },
  ])
  const victim = processors[0] as SpawnedProcessor
  const running = Promise.allSettled(Array.from({ length: 24 }, () => ask(client)))
  await new Promise((r) => setTimeout(r, 300))
  await victim.kill()
  const settled = await running
  const failed = settled.filter((s) => s.status === 'rejected')
  t.is(failed.length, 0, `every request answered (${failed.map((f) => (f.reason as MeshError).code)})`)
  const answers = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []))
  t.ok(
    answers.every((a) => a.text === STEP1_TEXT),
    'every answer is the whole text, once',
  )
  t.is(answers.length, 24)
})

test('resilience: a failing processor trips its breaker, then recovers after the cooldown', {
  timeout: 120_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const engineModels = await modelsDir(t)
  const engine = new LlamaCppBackend({ modelsDir: engineModels, threads: 1 })
  await engine.open()
  t.teardown(() => engine.close(), { order: 2 })
  // Loaded before anything: both processors report it loaded (routing prefers loaded ones).
  await engine.loadModel(TINY_MODEL_NAME, -1)
  const healthy = new OllamaCompatServer({ source: engine })
  await healthy.listen()
  t.teardown(() => healthy.close(), { order: 1 })
  let flaky = new OllamaCompatServer({ source: engine })
  await flaky.listen()
  const flakyPort = Number(new URL(flaky.url).port)
  t.teardown(() => flaky.close(), { order: 1 })

  const gateway = await startGateway(t, bootstrap, {
    routing: { strategy: 'round-robin', breakerFailures: 2, breakerCooldownMs: 1500 },
  })
  const [good, bad] = await Promise.all(
    [healthy.url, flaky.url].map(async (url) =>
      spawnProcessor(t, bootstrap, ['--store', await t.tmp(), '--backend', 'ollama', '--ollama-host', url]),
    ),
  )
  const client = await startClient(t, bootstrap, {}, { apiKey: await apiKeyFor(gateway) })
  t.ok(await until(async () => (await client.status()).processors.length === 2))
  const model = (await client.status()).processors[0]?.models.find((m) => m.startsWith(TINY_MODEL_NAME)) ?? ''
  t.ok(await until(() => loadedEverywhere(gateway, model)), 'both report the model loaded')
  const view = async (p: SpawnedProcessor | undefined) =>
    (await client.status()).processors.find((v) => v.publicKey === p?.publicKey)
  const askModel = () =>
    client.chat({ model, messages: [{ role: 'user', content: 'abc' }], options: { temperature: 0 } })

  await flaky.close()
  const during: InferResult[] = []
  for (let i = 0; i < 6; i++) during.push(await askModel())
  t.ok(
    during.every((r) => r.text === STEP1_TEXT && r.processor === good?.publicKey),
    'every request answered by the healthy processor (failed attempts retried)',
  )
  const tripped = await view(bad)
  t.is(tripped?.breaker, 'open', 'the failing processor is cut off')
  t.is(tripped?.failures, 2, 'after exactly breakerFailures failures')
  for (let i = 0; i < 4; i++) await askModel()
  t.is((await view(bad))?.failures, 2, 'an open breaker sends it nothing')

  flaky = new OllamaCompatServer({ source: engine, port: flakyPort })
  await flaky.listen()
  await new Promise((r) => setTimeout(r, 1600))
  const after: InferResult[] = []
  for (let i = 0; i < 6; i++) after.push(await askModel())
  t.ok(
    after.some((r) => r.processor === bad?.publicKey),
    'after the cooldown a probe goes through and it serves again',
  )
  t.is((await view(bad))?.breaker, 'closed')
})

test('backpressure: a bounded queue, ERR_BUSY past it, served fairly across users', {
  timeout: 120_000,
}, async (t) => {
  const { client, gateway, bootstrap } = await mesh(t, [{ tps: 60, parallel: 1 }], {
    maxQueue: 3,
    maxQueuePerUser: 2,
  })
  // One runs, two wait: the user's share of the queue is full.
  const first = [ask(client), ask(client), ask(client)]
  await new Promise((r) => setTimeout(r, 50))
  const busy = await rejectsWith(t, ask(client), 'ERR_BUSY', "past the user's share: ERR_BUSY")
  t.ok(Number(busy?.details?.retryAfterMs) >= 1000, `with a retry hint (${busy?.details?.retryAfterMs} ms)`)
  t.is((await Promise.all(first)).length, 3, 'the running and queued ones complete')

  // Fairness: alice queues two behind her running one, then bob one: bob goes before alice's last.
  const alice = await startClient(t, bootstrap, {}, { apiKey: await apiKeyFor(gateway, 'alice', 'user') })
  const bob = await startClient(t, bootstrap, {}, { apiKey: await apiKeyFor(gateway, 'bob', 'user') })
  const carol = await startClient(t, bootstrap, {}, { apiKey: await apiKeyFor(gateway, 'carol', 'user') })
  const order: string[] = []
  const tag = (who: string, p: Promise<unknown>) => p.then(() => order.push(who))
  const aliceRuns = [tag('alice', ask(alice)), tag('alice', ask(alice)), tag('alice', ask(alice))]
  await new Promise((r) => setTimeout(r, 50))
  const bobRuns = tag('bob', ask(bob))
  await new Promise((r) => setTimeout(r, 20))
  await rejectsWith(t, ask(carol), 'ERR_BUSY', 'the whole queue is full (3): ERR_BUSY for anyone')
  await Promise.all([...aliceRuns, bobRuns])
  t.alike(order, ['alice', 'alice', 'bob', 'alice'], `users take turns: ${order}`)
})

test('cancel frees the slot at once; a request timeout is ERR_TIMEOUT', { timeout: 120_000 }, async (t) => {
  const { client, gateway, processors } = await mesh(t, [{ tps: 200, parallel: 1 }])
  // ~5 s of generation if nobody stopped it.
  const long = client.generate({
    model: LOOP_MODEL,
    prompt: 'a',
    options: { num_predict: 1000 },
    stream: true,
  })
  for await (const part of long) {
    if (!part.done) {
      // The processor tells the gateway that asks which running generations are not its own.
      const key = Buffer.from((processors[0] as SpawnedProcessor).publicKey, 'hex')
      const status = await gateway.net
        .peer(key)
        .request<{ active: number; activeOthers?: number }>('status', null)
      t.is(status.active, 1, 'one generation running')
      t.is(status.activeOthers, 0, "and it is the asking gateway's own")
      long.abort()
      break
    }
  }
  const started = Date.now()
  const next = await ask(client)
  t.is(next.text, STEP1_TEXT)
  t.ok(Date.now() - started < 1500, `the next request started at once (${Date.now() - started} ms)`)

  const timedOut = Date.now()
  await rejectsWith(
    t,
    client.generate({ model: LOOP_MODEL, prompt: 'a', options: { num_predict: 1000 }, timeoutMs: 300 }),
    'ERR_TIMEOUT',
    'a request that asked for 300 ms',
  )
  t.ok(Date.now() - timedOut < 2000, 'answered when its time ran out')
  const again = Date.now()
  t.is((await ask(client)).text, STEP1_TEXT)
  t.ok(Date.now() - again < 1500, 'the timed-out generation freed its slot')
})

test('firewall: a processor refuses any peer that is not a trusted gateway', {
  timeout: 60_000,
}, async (t) => {
  const { client, processors, net } = await mesh(t, [{}])
  const processor = processors[0] as SpawnedProcessor
  // A stranger on the same DHT calls the processor directly, bypassing the gateway and its accounts.
  const stranger = new RPC({ dht: net.createNode() })
  t.teardown(() => stranger.destroy(), { order: 0 })
  const outcome = await stranger
    .request(Buffer.from(processor.publicKey, 'hex'), 'status', Buffer.from('null'), { timeout: 6_000 })
    .then(
      () => 'answered',
      (err: { code?: string }) => err.code ?? 'failed',
    )
  t.ok(
    ['CHANNEL_CLOSED', 'CHANNEL_DESTROYED', 'TIMEOUT_EXCEEDED'].includes(outcome),
    `refused at the connection (${outcome})`,
  )
  t.is((await ask(client)).text, STEP1_TEXT, 'the gateway still reaches it')
})

test('resilience: a processor that hangs until the deadline counts as failing', {
  timeout: 120_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, {
    inferenceTimeoutMs: 800,
    routing: { strategy: 'round-robin', breakerFailures: 1, breakerCooldownMs: 60_000 },
  })
  const conf = join(await t.tmp(), 'processor.json')
  await writeFile(conf, JSON.stringify({ backend: { throttle: { firstTokenDelayMs: 30_000 } } }))
  const models = await modelsDir(t)
  const [hung, good] = await Promise.all([
    spawnProcessor(t, bootstrap, [
      '--store',
      await t.tmp(),
      '--models',
      models,
      '--backend',
      'llamacpp',
      '--config',
      conf,
    ]),
    spawnProcessor(t, bootstrap, ['--store', await t.tmp(), '--models', models, '--backend', 'llamacpp']),
  ])
  const client = await startClient(t, bootstrap, {}, { apiKey: await apiKeyFor(gateway) })
  t.ok(await until(async () => (await client.status()).processors.length === 2))
  // Loaded on both, so round-robin takes turns (routing prefers loaded processors).
  await client.modelOp('load', TINY_MODEL_NAME)
  t.ok(await until(() => loadedEverywhere(gateway, TINY_MODEL_NAME)), 'loaded on both')
  const outcomes: string[] = []
  for (let i = 0; i < 4; i++) {
    outcomes.push(
      await ask(client).then(
        (r) => (r.processor === good?.publicKey ? 'good' : 'hung'),
        (e: MeshError) => e.code,
      ),
    )
  }
  t.is(
    outcomes.filter((o) => o === 'ERR_TIMEOUT').length,
    1,
    `one request ran into the hung processor: ${outcomes}`,
  )
  t.is(outcomes.filter((o) => o === 'good').length, 3, 'the rest went to the healthy one')
  const view = (await client.status()).processors.find((p) => p.publicKey === hung?.publicKey)
  t.is(view?.breaker, 'open', 'the hung processor is cut off')
})
