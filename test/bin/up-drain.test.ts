/**
 * `llm-mesh up` stopped with SIGTERM while an HTTP stream runs: the gateway takes nothing
 * new (503) but finishes the stream, then the mesh stops and `up` exits 0.
 */
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import test from 'brittle'
import { writeTinyModel } from '../../facilities/tiny-model/tiny-model.js'
import { BIN, closedPort } from '../helpers/mesh.js'

const MODEL = 'looper'
/** Tokens the stream asks for, and the pace the processors hand them out: ~6 s of stream. */
const TOKENS = 600
const TOKENS_PER_SECOND = 100

test('up: SIGTERM lets an HTTP stream in flight finish, refuses new requests, then exits 0', {
  timeout: 180_000,
}, async (t) => {
  const cwd = await t.tmp()
  const data = join(cwd, 'data')
  await mkdir(join(data, 'models'), { recursive: true })
  // A model that never stops by itself, paced by the processors' config (read from their cwd).
  await writeTinyModel(join(data, 'models', `${MODEL}.gguf`), { loop: true })
  await mkdir(join(cwd, 'config'))
  await writeFile(
    join(cwd, 'config', 'processor.json'),
    JSON.stringify({ backend: { throttle: { tokensPerSecond: TOKENS_PER_SECOND } } }),
  )
  const port = await closedPort()
  const up = spawn(
    process.execPath,
    [
      BIN,
      'up',
      '--no-chat',
      '--data',
      data,
      '--http-port',
      String(port),
      '--admin-password',
      'operator-pw-1',
    ],
    { cwd, stdio: ['ignore', 'pipe', 'pipe'] },
  )
  const exited = new Promise<number | null>((resolve) => up.once('exit', (code) => resolve(code)))
  t.teardown(async () => {
    if (up.exitCode === null && up.signalCode === null) up.kill('SIGKILL')
    await exited
  })
  let out = ''
  up.stdout.on('data', (d: Buffer) => {
    out += d
  })
  up.stderr.resume()
  const deadline = Date.now() + 120_000
  while (!out.includes('llm-mesh ready') && Date.now() < deadline && up.exitCode === null) {
    await new Promise((r) => setTimeout(r, 100))
  }
  t.ok(out.includes('llm-mesh ready'), 'up is ready')
  const key = readFileSync(join(data, 'operator.key'), 'utf8').trim()
  const base = `http://127.0.0.1:${port}`
  const headers = { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' }

  const res = await fetch(`${base}/api/generate`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ model: MODEL, prompt: 'a', stream: true, options: { num_predict: TOKENS } }),
  })
  t.is(res.status, 200)
  const reader = (res.body as ReadableStream<Uint8Array>).getReader()
  const decoder = new TextDecoder()
  let buffered = ''
  const lines: Array<{ response?: string; done?: boolean; eval_count?: number; error?: string }> = []
  let stopped = false
  let refused: { status: number; body: string } | null = null
  const started = Date.now()
  for (;;) {
    const { value, done } = await reader.read()
    if (done) break
    buffered += decoder.decode(value, { stream: true })
    let nl = buffered.indexOf('\n')
    while (nl !== -1) {
      lines.push(JSON.parse(buffered.slice(0, nl)))
      buffered = buffered.slice(nl + 1)
      nl = buffered.indexOf('\n')
    }
    if (!stopped && lines.length > 0) {
      stopped = true
      up.kill('SIGTERM')
      // Give `up` a moment to start its drain, then knock: a new request is refused.
      await new Promise((r) => setTimeout(r, 500))
      const knock = await fetch(`${base}/api/generate`, {
        method: 'POST',
        headers,
        body: JSON.stringify({ model: MODEL, prompt: 'a', stream: false, options: { num_predict: 1 } }),
      }).catch(() => null)
      refused = knock ? { status: knock.status, body: await knock.text() } : null
    }
  }
  const last = lines[lines.length - 1]
  t.ok(stopped, 'SIGTERM was sent mid-stream')
  t.is(last?.done, true, `the stream ended with its final line: ${JSON.stringify(last)}`)
  t.is(last?.eval_count, TOKENS, `every token came (${last?.eval_count} of ${TOKENS})`)
  const text = lines.map((l) => l.response ?? '').join('')
  t.ok(text.length >= TOKENS, `the whole text (${text.length} characters)`)
  t.ok(Date.now() - started > 3_000, `it ran its course after the SIGTERM (${Date.now() - started} ms)`)
  t.is(refused?.status, 503, `a new request during the drain is refused: ${refused?.body}`)
  t.is(await exited, 0, 'up exited 0 once it had drained')
})
