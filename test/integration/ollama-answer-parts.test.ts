/**
 * Tools, reasoning, output formats and log probabilities through the whole mesh: the official
 * `ollama` client → the gateway's Ollama API → a processor with the ollama backend → an
 * Ollama-protocol server over a scripted source. The server must see the fields as the client
 * sent them, and the client must get the script's answer back, whole and streamed.
 */
import test from 'brittle'
import { Ollama } from 'ollama'
import { parseConfig, processorConfigSchema } from '../../kernel/config.js'
import { ProcessorWorker } from '../../workers/processor/processor.worker.js'
import { askEverything, SCHEMA, WEATHER } from '../facilities/http/ollama-asks.js'
import { serveScripted } from '../facilities/http/ollama-scripted-source.js'
import { apiKeyFor, startGateway, TEST_LOG, testnet, until } from '../helpers/mesh.js'

type Json = Record<string, unknown>

test('ollama through the mesh: tools, think, format and logprobs reach Ollama and come back', {
  timeout: 60_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const ollamaServer = await serveScripted(t)
  const gateway = await startGateway(t, bootstrap, { http: { enabled: true, port: 0 } })
  const processor = new ProcessorWorker(
    parseConfig(processorConfigSchema, {
      bootstrap,
      store: await t.tmp(),
      log: TEST_LOG,
      backend: { type: 'ollama', ollamaHost: ollamaServer.url },
      firewall: { trustedGateways: [gateway.publicKeyHex] },
    }),
  )
  t.teardown(() => processor.close(), { order: 1 })
  await processor.ready()
  t.ok(await until(() => gateway.router.size === 1, 10_000), 'the gateway sees the processor')

  const client = new Ollama({
    host: gateway.httpUrl as string,
    headers: { Authorization: `Bearer ${await apiKeyFor(gateway)}` },
  })
  await askEverything(t, client)

  const generations = ollamaServer.bodies.filter(([path]) => path === '/api/chat' || path === '/api/generate')
  const [chat, streamed, gen] = generations.map(([, body]) => body) as [Json, Json, Json]
  t.alike(chat.tools, [WEATHER], 'Ollama got the tools as the client sent them')
  t.is(chat.think, true)
  t.is(streamed.think, 'medium')
  t.is(streamed.logprobs, true)
  t.is(streamed.top_logprobs, 2)
  t.alike(gen.format, SCHEMA, 'and the schema')
})
