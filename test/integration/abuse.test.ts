/**
 * One user's heavy requests must not take the processor away from the others: two prompts
 * just under the gateway's 1 MiB limit once kept a processor's event loop busy for seconds,
 * it missed its heartbeats, the gateway dropped it, and everyone else got 503.
 */
import test from 'brittle'
import { TINY_MODEL_NAME } from '../../facilities/tiny-model/tiny-model.js'
import { apiKeyFor, spawnTinyProcessor, startClient, startGateway, testnet, until } from '../helpers/mesh.js'

/** Product timings: the heartbeat bound the processor must keep. */
const REGISTRY = {
  lookupIntervalMs: 3_000,
  heartbeatIntervalMs: 1_000,
  heartbeatTimeoutMs: 1_500,
  maxMissed: 2,
}

test('abuse: a pair of 1 MiB prompts leaves the processor registered and other users served', {
  timeout: 180_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, { registry: REGISTRY })
  const processor = await spawnTinyProcessor(t, bootstrap, ['--parallel', '3'])
  const heavy = await startClient(t, bootstrap, {}, { apiKey: await apiKeyFor(gateway, 'heavy', 'user') })
  const other = await startClient(t, bootstrap, {}, { apiKey: await apiKeyFor(gateway, 'other', 'user') })
  t.ok(await until(() => gateway.router.size === 1, 20_000), 'the processor joined')
  await other.generate({ model: TINY_MODEL_NAME, prompt: 'abc', options: { num_predict: 1 } })

  const states = new Set<string>()
  const watching = setInterval(() => {
    for (const p of gateway.router.list()) states.add(p.state)
    if (gateway.router.size === 0) states.add('dropped')
  }, 50)
  const prompt = 'abcdefghij '.repeat(95_000) // ~1 MiB, under the gateway's limit
  const started = Date.now()
  const big = Promise.allSettled(
    [0, 1].map(() => heavy.generate({ model: TINY_MODEL_NAME, prompt, options: { num_predict: 1 } })),
  )
  // Meanwhile another user asks, again and again, for ~5 s.
  const waits: number[] = []
  const failures: string[] = []
  while (Date.now() - started < 5_000) {
    const asked = Date.now()
    try {
      const r = await other.generate({ model: TINY_MODEL_NAME, prompt: 'abc', options: { num_predict: 3 } })
      if (r.text !== 'def') failures.push(`text ${r.text}`)
    } catch (err) {
      failures.push((err as { code?: string }).code ?? String(err))
    }
    waits.push(Date.now() - asked)
    await new Promise((r) => setTimeout(r, 100))
  }
  const results = await big
  clearInterval(watching)
  t.alike(failures, [], `every request of the other user was answered (${waits.length} requests)`)
  t.ok(Math.max(...waits) < 3_000, `none waited 3 s (longest ${Math.max(...waits)} ms)`)
  t.alike([...states], ['serving'], 'the processor stayed serving throughout')
  t.ok(
    results.every((r) => r.status === 'fulfilled'),
    `the heavy requests were answered too: ${results.map((r) => r.status)}`,
  )
  t.is(gateway.router.list()[0]?.publicKey, processor.publicKey)
})
