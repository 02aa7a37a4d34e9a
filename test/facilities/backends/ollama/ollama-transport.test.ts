/**
 * The Ollama backend's HTTP side against a scripted Ollama-protocol server:
 * keep-alive reuse, stops before the first header (a model loading) and
 * mid-stream by each of the caller's signal, its CancelToken and close(), the
 * progress timeout mid-stream, a reply cut off, and error pages that are not
 * JSON.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { Test } from 'brittle'
import test from 'brittle'
import { OllamaBackend } from '../../../../facilities/backends/ollama/ollama.backend.js'
import { CancelToken } from '../../../../kernel/cancel.js'
import { rejectsWith } from '../../../helpers/assert.js'

/** A stop must land at once; this only bounds a broken test. */
const QUICK_MS = 2000
const USER = [{ role: 'user' as const, content: 'hi' }]

type Handler = (req: IncomingMessage, res: ServerResponse) => void

interface Fake {
  url: string
  /** The handler for POST /api/chat (GET /api/version always answers). */
  chat: Handler
  connections: number
  /** Resolves when the next /api/chat request arrives; `closed` when its connection goes. */
  nextChat(): Promise<{ res: ServerResponse; closed: Promise<void> }>
}

function chunk(content: string): string {
  return `${JSON.stringify({ model: 'm', message: { role: 'assistant', content }, done: false })}\n`
}

const DONE = `${JSON.stringify({ model: 'm', message: { role: 'assistant', content: '' }, done: true, done_reason: 'stop', eval_count: 2, eval_duration: 1e6 })}\n`

/** Answers a whole chat stream: 'a', 'b', then the done frame. */
const answer: Handler = (_req, res) => {
  res.writeHead(200, { 'Content-Type': 'application/x-ndjson' })
  res.end(chunk('a') + chunk('b') + DONE)
}

async function fake(t: Test): Promise<Fake> {
  const waiting: Array<(x: { res: ServerResponse; closed: Promise<void> }) => void> = []
  const state: Fake = {
    url: '',
    chat: answer,
    connections: 0,
    nextChat: () => new Promise((resolve) => waiting.push(resolve)),
  }
  const server = createServer((req, res) => {
    req.resume()
    if (req.url === '/api/version') {
      res.writeHead(200, { 'Content-Type': 'application/json' })
      res.end('{"version":"0.0.0-test"}')
      return
    }
    const closed = new Promise<void>((resolve) => res.once('close', () => resolve()))
    waiting.shift()?.({ res, closed })
    state.chat(req, res)
  })
  server.on('connection', () => state.connections++)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    server.closeAllConnections()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })
  const addr = server.address()
  state.url = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`
  return state
}

async function backendFor(t: Test, url: string, requestTimeoutMs?: number): Promise<OllamaBackend> {
  const backend = new OllamaBackend({ host: url, ...(requestTimeoutMs ? { requestTimeoutMs } : {}) })
  t.teardown(() => backend.close())
  await backend.open()
  return backend
}

test('ollama transport: calls reuse one keep-alive connection', async (t) => {
  const server = await fake(t)
  const backend = await backendFor(t, server.url)
  for (let i = 0; i < 5; i++) {
    const r = await backend.chat({ model: 'm', messages: USER })
    t.is(r.text, 'ab')
    t.is(r.doneReason, 'stop')
  }
  t.is(server.connections, 1, 'open() and five chats over one connection')
})

test('ollama transport: a reply that ends after its done frame keeps its connection; one that never ends is cut', async (t) => {
  const server = await fake(t)
  // The terminating chunk in a packet of its own, after the call has returned.
  server.chat = (_req, res) => {
    res.writeHead(200, { 'Content-Type': 'application/x-ndjson' })
    res.write(chunk('a') + DONE)
    setTimeout(() => res.end(), 5)
  }
  const backend = await backendFor(t, server.url)
  for (let i = 0; i < 3; i++) {
    t.is((await backend.chat({ model: 'm', messages: USER })).text, 'a')
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  t.is(server.connections, 1, 'the socket went back to the pool each time')

  server.chat = (_req, res) => {
    res.writeHead(200, { 'Content-Type': 'application/x-ndjson' })
    res.write(chunk('a') + DONE) // and never ends
  }
  const arrived = server.nextChat()
  t.is((await backend.chat({ model: 'm', messages: USER })).text, 'a', 'the call returns at its done frame')
  const started = Date.now()
  await (await arrived).closed
  t.ok(Date.now() - started < QUICK_MS, `its socket was given up ${Date.now() - started} ms later`)
})

test('ollama transport: a stop before the first header (model loading)', async (t) => {
  const server = await fake(t)
  server.chat = () => {} // headers never come: the model is "loading"
  const backend = await backendFor(t, server.url)

  const controller = new AbortController()
  const arrived = server.nextChat()
  const bySignal = backend.chat({ model: 'm', messages: USER }, { signal: controller.signal })
  const first = await arrived
  let started = Date.now()
  controller.abort()
  await rejectsWith(t, bySignal, 'ERR_CANCELLED', 'the caller’s signal')
  await first.closed
  t.ok(Date.now() - started < QUICK_MS, 'the request to Ollama was closed')

  const cancel = new CancelToken()
  const arrived2 = server.nextChat()
  const byToken = backend.chat({ model: 'm', messages: USER }, { cancel })
  const second = await arrived2
  started = Date.now()
  cancel.abort()
  await rejectsWith(t, byToken, 'ERR_CANCELLED', 'the caller’s CancelToken')
  await second.closed
  t.ok(Date.now() - started < QUICK_MS, 'closed too')

  const arrived3 = server.nextChat()
  const byClose = backend.chat({ model: 'm', messages: USER })
  const third = await arrived3
  await backend.close()
  await rejectsWith(t, byClose, 'ERR_BACKEND_UNAVAILABLE', 'close()')
  await third.closed
})

test('ollama transport: a stop mid-stream returns the text so far', async (t) => {
  const server = await fake(t)
  server.chat = (_req, res) => {
    res.writeHead(200, { 'Content-Type': 'application/x-ndjson' })
    res.write(chunk('a'))
    res.write(chunk('b')) // and then nothing: the caller stops it
  }
  const backend = await backendFor(t, server.url)
  const cancel = new CancelToken()
  const pieces: string[] = []
  const arrived = server.nextChat()
  const result = await backend.chat(
    { model: 'm', messages: USER },
    {
      cancel,
      onToken: (s) => {
        pieces.push(s)
        if (pieces.length === 2) cancel.abort()
      },
    },
  )
  t.is(result.doneReason, 'cancelled')
  t.is(result.text, 'ab')
  await (await arrived).closed
  t.pass('the stream to Ollama was closed')

  server.chat = answer
  t.is((await backend.chat({ model: 'm', messages: USER })).text, 'ab', 'still serving')
})

test('ollama transport: no progress mid-stream times out; a cut-off stream fails', async (t) => {
  const server = await fake(t)
  server.chat = (_req, res) => {
    res.writeHead(200, { 'Content-Type': 'application/x-ndjson' })
    res.write(chunk('a')) // then stalls
  }
  const backend = await backendFor(t, server.url, 200)
  const started = Date.now()
  const e = await rejectsWith(
    t,
    backend.chat({ model: 'm', messages: USER }),
    'ERR_BACKEND_UNAVAILABLE',
    'stalled stream',
  )
  t.ok(/no progress/.test(e?.message ?? ''), e?.message)
  t.ok(Date.now() - started < QUICK_MS, `after ${Date.now() - started} ms`)

  server.chat = (_req, res) => {
    res.writeHead(200, { 'Content-Type': 'application/x-ndjson' })
    res.write(chunk('a'), () => setTimeout(() => res.socket?.destroy(), 20))
  }
  await rejectsWith(
    t,
    backend.chat({ model: 'm', messages: USER }),
    'ERR_BACKEND_UNAVAILABLE',
    'stream cut off by the server',
  )
})

/** Runs `call` with console.log captured (brittle prints through it, so only around the call). */
async function capturingConsole(
  call: () => Promise<unknown>,
): Promise<{ error: unknown; logged: unknown[] }> {
  const logged: unknown[] = []
  const log = console.log
  console.log = (...args: unknown[]) => logged.push(args)
  try {
    await call()
    return { error: null, logged }
  } catch (error) {
    return { error, logged }
  } finally {
    console.log = log
  }
}

test('ollama transport: error replies, JSON or not, keep their message', async (t) => {
  const server = await fake(t)
  const backend = await backendFor(t, server.url)
  const cases: Array<{ status: number; type: string; body: string; code: string; says: string }> = [
    {
      status: 502,
      type: 'text/html',
      body: '<html>bad gateway from the proxy</html>',
      code: 'ERR_BACKEND_UNAVAILABLE',
      says: 'bad gateway from the proxy',
    },
    { status: 400, type: 'text/plain', body: 'bad options', code: 'ERR_BAD_REQUEST', says: 'bad options' },
    {
      status: 404,
      type: 'application/json',
      body: '{"error":"model \\"m\\" not found, try pulling it first"}',
      code: 'ERR_MODEL_NOT_FOUND',
      says: "'m'",
    },
  ]
  for (const c of cases) {
    server.chat = (_req, res) => {
      res.writeHead(c.status, { 'Content-Type': c.type })
      res.end(c.body)
    }
    const { error, logged } = await capturingConsole(() => backend.chat({ model: 'm', messages: USER }))
    const e = await rejectsWith(t, Promise.reject(error), c.code, `${c.status} ${c.type}`)
    t.ok(e?.message.includes(c.says), e?.message)
    t.alike(logged, [], 'nothing written to the console')
  }
  server.chat = answer
  t.is((await backend.chat({ model: 'm', messages: USER })).text, 'ab', 'still serving')
})
