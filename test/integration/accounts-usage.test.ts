import { spawnSync } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import test from 'brittle'
import { TINY_MODEL_NAME, writeTinyModel } from '../../facilities/tiny-model/tiny-model.js'
import type { MeshError } from '../../kernel/errors.js'
import type { MeshClient } from '../../workers/client/client.worker.js'
import { rejectsWith } from '../helpers/assert.js'
import {
  apiKeyFor,
  BIN,
  FAST_REGISTRY,
  spawnProcessor,
  spawnWorker,
  startClient,
  startGateway,
  TEST_AUTH,
  testnet,
} from '../helpers/mesh.js'
import { waitForProcessors } from './accounts-fixture.js'

const STEP1_TEXT = 'defghijklmnopqrstuvwxyz'

test('limits: 200 concurrent requests against 50 rpm admit exactly 50', { timeout: 120_000 }, async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap)
  await spawnProcessor(t, bootstrap, ['--store', await t.tmp(), '--backend', 'echo', '--parallel', '64'])
  const key = await apiKeyFor(gateway, 'dave', 'user', { rpm: 50 })
  const client = await startClient(t, bootstrap, {}, { apiKey: key })
  t.ok(await waitForProcessors(client))

  const results = await Promise.allSettled(
    Array.from({ length: 200 }, (_, i) => client.generate({ model: 'echo', prompt: `hello ${i}` })),
  )
  const ok = results.filter((r) => r.status === 'fulfilled')
  const limited = results.filter(
    (r) => r.status === 'rejected' && (r.reason as MeshError).code === 'ERR_RATE_LIMITED',
  )
  t.is(ok.length, 50, 'exactly 50 admitted')
  t.is(limited.length, 150, 'the other 150 are ERR_RATE_LIMITED')
  await rejectsWith(t, client.generate({ model: 'no-such-model', prompt: 'x' }), 'ERR_MODEL_NOT_FOUND')
  const first = (limited[0] as PromiseRejectedResult).reason as MeshError
  const retry = Number(first.details?.retryAfterMs)
  t.ok(retry > 0 && retry <= 60_000, `retry after ${retry} ms`)

  // The ledger holds exactly the admitted ones, with the backend's counts.
  const usage = await client.usage()
  t.is(usage.today.requests, 50, 'a request for a model nobody serves is refused before it counts')
  t.absent(
    usage.rows.some((r) => r.model === 'no-such-model'),
    'and leaves nothing in the ledger',
  )
  const expected = ok.reduce(
    (n, r) => n + (r as PromiseFulfilledResult<{ completionTokens: number }>).value.completionTokens,
    0,
  )
  t.is(usage.today.completionTokens, expected, 'completion tokens as the backend counted them')

  // A key's own rpm is enforced on top of the user's.
  const limitedKey = await startClient(t, bootstrap)
  const admin = await startClient(t, bootstrap, {}, { apiKey: await apiKeyFor(gateway) })
  const k = await admin.createKey({ name: 'slow', user: 'dave', limits: { rpm: 2 } })
  limitedKey.useApiKey(k.key)
  await gateway.auth?.updateUser('dave', { limits: { rpm: null } })
  await limitedKey.generate({ model: 'echo', prompt: 'a' })
  await limitedKey.generate({ model: 'echo', prompt: 'b' })
  const e = await rejectsWith(t, limitedKey.generate({ model: 'echo', prompt: 'c' }), 'ERR_RATE_LIMITED')
  t.is(e?.details?.scope, 'key', 'the key limit, not the user one')
})

test('limits: tokens per minute and per day, with real token counts from llama.cpp', {
  timeout: 120_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const models = await t.tmp()
  await writeTinyModel(join(models, `${TINY_MODEL_NAME}.gguf`))
  const gateway = await startGateway(t, bootstrap)
  await spawnProcessor(t, bootstrap, ['--store', await t.tmp(), '--models', models, '--backend', 'llamacpp'])
  // 'abc' as a chat costs 4 prompt tokens (<s> a b c) + 23 completion tokens = 27.
  const ask = (c: MeshClient) =>
    c.chat({
      model: TINY_MODEL_NAME,
      messages: [{ role: 'user', content: 'abc' }],
      options: { temperature: 0 },
    })

  const tpmClient = await startClient(
    t,
    bootstrap,
    {},
    { apiKey: await apiKeyFor(gateway, 'erin', 'user', { tpm: 50 }) },
  )
  t.ok(await waitForProcessors(tpmClient))
  const r1 = await ask(tpmClient)
  t.is(r1.text, STEP1_TEXT)
  t.is(r1.promptTokens + r1.completionTokens, 27, 'real counts: 4 + 23')
  await ask(tpmClient) // 27 < 50: admitted, the window now holds 54
  const tpm = await rejectsWith(t, ask(tpmClient), 'ERR_RATE_LIMITED', '54 tokens in the last minute >= 50')
  t.is(tpm?.details?.limit, 'tpm')

  const dayClient = await startClient(
    t,
    bootstrap,
    {},
    {
      apiKey: await apiKeyFor(gateway, 'frank', 'user', { dailyTokens: 60 }),
    },
  )
  await ask(dayClient)
  await ask(dayClient)
  await ask(dayClient) // 54 < 60: admitted; now 81
  const quota = await rejectsWith(t, ask(dayClient), 'ERR_QUOTA_EXCEEDED', 'daily tokens spent')
  const retry = Number(quota?.details?.retryAfterMs)
  const now = new Date()
  const midnight = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1)
  t.ok(Math.abs(Date.now() + retry - midnight) < 5_000, 'retry at the next UTC midnight')
  const usage = await dayClient.usage()
  t.is(usage.today.promptTokens + usage.today.completionTokens, 81, 'the ledger agrees: 3 x 27')
  t.is(usage.today.requests, 3, 'refused requests are not recorded')
})

test('ledger: usage survives kill -9 of the gateway right after the answers, without duplicates', {
  timeout: 180_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const store = await t.tmp()
  const confDir = await t.tmp()
  const config = join(confDir, 'gateway.json')
  await writeFile(config, JSON.stringify({ auth: TEST_AUTH, registry: FAST_REGISTRY }))
  // The first admin of a standalone gateway, made offline on its store.
  const made = spawnSync(
    process.execPath,
    [
      BIN,
      'user',
      'add',
      'grace',
      '--password',
      'grace-password',
      '--admin',
      '--store',
      store,
      '--config',
      config,
    ],
    { encoding: 'utf8' },
  )
  t.is(made.status, 0, made.stderr)
  const startGatewayChild = () => spawnWorker(t, 'gateway', bootstrap, ['--store', store, '--config', config])

  const first = await startGatewayChild()
  await spawnProcessor(t, bootstrap, ['--store', await t.tmp(), '--backend', 'echo', '--parallel', '16'])
  const client = await startClient(t, bootstrap, { gateway: first.publicKey })
  await client.login('grace', 'grace-password')
  t.ok(await waitForProcessors(client))

  const N = 120
  const prompts = Array.from({ length: N }, (_, i) => `request number ${i} ${'x'.repeat(i % 7)}`)
  const answers = await Promise.all(prompts.map((prompt) => client.generate({ model: 'echo', prompt })))
  await first.kill() // SIGKILL the moment the last answer arrived
  const ids = new Set(answers.map((a) => a.requestId))
  t.is(ids.size, N, 'every answer carries its own request id')
  const prompt = answers.reduce((n, a) => n + a.promptTokens, 0)
  const completion = answers.reduce((n, a) => n + a.completionTokens, 0)

  const second = await startGatewayChild()
  t.is(second.publicKey, first.publicKey, 'same store, same key')
  const again = await startClient(t, bootstrap, { gateway: second.publicKey })
  await again.login('grace', 'grace-password')
  const usage = await again.usage({ records: true, limit: 10_000 })
  t.is(usage.today.requests, N, 'every request is in the counters')
  t.is(usage.today.promptTokens, prompt, 'prompt tokens = sum of the answers')
  t.is(usage.today.completionTokens, completion, 'completion tokens = sum of the answers')
  const records = usage.records ?? []
  t.is(records.length, N, 'one record per request')
  t.alike(new Set(records.map((r) => r.id)), ids, 'the same request ids, no duplicates')
  t.ok(
    records.every((r) => r.status === 'ok' && r.model === 'echo' && r.processor),
    'records carry status, model and processor',
  )
})
