/**
 * The floor of bench/http.ts: the least any HTTP gateway in front of an RPC
 * processor pays on this stack (node:http in, @hyperswarm/rpc over hyperdht
 * and UDX, two processes), with none of llm-mesh's work — no key, no limits,
 * no ledger, no validation, no routing. Started by bench/http.ts, in two
 * processes:
 *
 *   node dist/bench/bare-relay.js processor   raw RPC `generate`: echoes the prompt
 *   node dist/bench/bare-relay.js relay       HTTP POST /api/generate → that RPC → an Ollama-shaped answer
 *
 * Each reads the loopback bootstrap from BOOTSTRAP (JSON), the relay the
 * processor's key from PROCESSOR; each sends `{ type: 'ready', ... }` over IPC
 * and exits when its parent goes.
 */
import { createServer } from 'node:http'
import RPC from '@hyperswarm/rpc'
import DHT from 'hyperdht'
import { baseUrl, closeServer, listenOn } from '../facilities/http/plumbing.js'

const role = process.argv[2]
const bootstrap = JSON.parse(process.env.BOOTSTRAP ?? 'null') as string[] | null
if (!bootstrap || (role !== 'processor' && role !== 'relay')) {
  console.error('usage: BOOTSTRAP=<json host:port list> bare-relay.js processor|relay')
  process.exit(2)
}
const dht = new DHT({ bootstrap, host: '127.0.0.1', firewalled: false })
const rpc = new RPC({ dht })
const stops: Array<() => Promise<void>> = [() => rpc.destroy(), () => dht.destroy()]

if (role === 'processor') {
  const server = rpc.createServer()
  server.respond('generate', (buf: Buffer) => {
    const req = JSON.parse(buf.toString('utf8')) as { prompt: string }
    return Buffer.from(JSON.stringify({ text: req.prompt, promptTokens: 4, completionTokens: 4 }))
  })
  await server.listen()
  stops.unshift(() => server.close())
  process.send?.({ type: 'ready', publicKey: server.publicKey.toString('hex') })
} else {
  const processor = rpc.connect(Buffer.from(process.env.PROCESSOR ?? '', 'hex'))
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', async () => {
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { model: string; stream?: boolean }
        const reply = JSON.parse(
          (await processor.request('generate', Buffer.from(JSON.stringify(body)))).toString(),
        )
        const done = {
          model: body.model,
          created_at: new Date().toISOString(),
          done: true,
          done_reason: 'stop',
        }
        if (body.stream) {
          res.writeHead(200, { 'Content-Type': 'application/x-ndjson' })
          res.write(`${JSON.stringify({ model: body.model, response: reply.text, done: false })}\n`)
          res.end(`${JSON.stringify({ ...done, response: '' })}\n`)
        } else {
          const out = JSON.stringify({ ...done, response: reply.text, eval_count: reply.completionTokens })
          res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(out) })
          res.end(out)
        }
      } catch (err) {
        res.writeHead(500).end(String(err))
      }
    })
  })
  server.keepAliveTimeout = 65_000
  const port = await listenOn(server, '127.0.0.1', 0)
  stops.unshift(() => closeServer(server))
  process.send?.({ type: 'ready', url: baseUrl('127.0.0.1', port) })
}

process.once('disconnect', async () => {
  for (const stop of stops) await stop().catch(() => {})
  process.exit(0)
})
