/**
 * Pulling a model onto a processor through a gateway: RPC `modelPull` with progress tagged
 * by processor, then the pulled model answers through the mesh; Ollama's `/api/pull` on the
 * gateway for admins; non-admins refused (ERR_FORBIDDEN, 403). The GGUF comes from a
 * loopback HTTP server.
 */
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import test from 'brittle'
import { encodeTinyModel } from '../../facilities/tiny-model/tiny-model.js'
import type { TaggedProgress } from '../../workers/client/model-pull.js'
import { rejectsWith } from '../helpers/assert.js'
import { serveFiles } from '../helpers/gguf-server.js'
import { post } from '../helpers/http.js'
import {
  apiKeyFor,
  BIN,
  spawnTinyProcessor,
  startClient,
  startGateway,
  testnet,
  until,
} from '../helpers/mesh.js'

const STEP1_TEXT = 'defghijklmnopqrstuvwxyz'
const GREEDY = { temperature: 0 }

test('model pull: through the gateway onto a processor, with progress, then it answers', {
  timeout: 90_000,
}, async (t) => {
  const gguf = encodeTinyModel()
  const digest = `sha256:${createHash('sha256').update(gguf).digest('hex')}`
  const files = await serveFiles(t, { 'tiny.gguf': gguf })
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, { http: { enabled: true, port: 0 } })
  const proc = await spawnTinyProcessor(t, bootstrap)
  t.ok(await until(() => gateway.router.size === 1), 'the gateway sees the processor')
  const [adminKey, userKey] = await Promise.all([apiKeyFor(gateway), apiKeyFor(gateway, 'bob', 'user')])
  const admin = await startClient(t, bootstrap, {}, { apiKey: adminKey })
  const bob = await startClient(t, bootstrap, {}, { apiKey: userKey })

  const run = admin.pullModel({
    model: 'pulled',
    source: files.url('tiny.gguf'),
    digest,
    to: [proc.publicKey],
  })
  const frames: TaggedProgress[] = []
  for await (const p of run) frames.push(p)
  const summary = await run.result
  t.alike(summary, {
    model: 'pulled',
    results: [{ processor: proc.publicKey, ok: true, model: 'pulled', digest, size: gguf.length }],
  })
  t.ok(
    frames.every((f) => f.processor === proc.publicKey),
    'every frame names the processor',
  )
  const bytes = frames.filter((f) => f.total !== undefined)
  t.is(bytes.at(-1)?.completed, gguf.length, 'byte progress reaches the file size')
  t.is(frames.at(-1)?.status, 'success')

  const answer = await admin.generate({ model: 'pulled', prompt: 'abc', options: GREEDY })
  t.is(answer.text, STEP1_TEXT, 'the pulled model answers through the mesh')

  await rejectsWith(t, bob.pullModel({ model: 'x', source: files.url('tiny.gguf') }).result, 'ERR_FORBIDDEN')
  await rejectsWith(t, admin.pullModel({ model: 'x', to: ['zz'] }).result, 'ERR_BAD_REQUEST')
  const bad = await admin.pullModel({ model: 'x', source: 'ftp://nowhere/x.gguf', to: 'all' }).result
  t.is(
    bad.results[0]?.ok === false && bad.results[0].error.code,
    'ERR_BAD_REQUEST',
    'a bad source, per processor',
  )
  await rejectsWith(
    t,
    admin.pullModel({ model: 'x', to: 'all' }).result,
    'ERR_NOT_FOUND',
    'no source: Ollama processors only, and there are none',
  )

  // The CLI: `model pull NAME --from URL --json` prints a JSON line per progress frame, then the summary.
  const cli = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    const args = [
      'model',
      'pull',
      'bycli',
      '--from',
      files.url('tiny.gguf'),
      '--to',
      proc.publicKey,
      '--json',
    ]
    const via = ['--bootstrap', bootstrap.join(','), '--api-key', adminKey]
    execFile(process.execPath, [BIN, ...args, ...via], { timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: unknown }).code ?? 1) : 0, stdout, stderr }),
    )
  })
  t.is(cli.code, 0, `llm-mesh model pull exits 0 ${cli.stderr}`)
  const printed = cli.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>)
  t.ok(printed.length > 1, `${printed.length} JSON lines`)
  t.ok(JSON.stringify(printed.at(-1)).includes('"ok":true'), 'the last line: the processor pulled it')
  const viaCli = await admin.generate({ model: 'bycli', prompt: 'abc', options: GREEDY })
  t.is(viaCli.text, STEP1_TEXT, 'the model the CLI pulled answers')

  // Ollama's /api/pull on the gateway.
  const url = gateway.httpUrl as string
  const forbidden = await post(
    `${url}/api/pull`,
    { model: 'viahttp', source: files.url('tiny.gguf') },
    userKey,
  )
  t.is(forbidden.status, 403, 'non-admins: 403')
  t.ok(((await forbidden.json()) as { error?: string }).error, 'with an error')
  const res = await post(`${url}/api/pull`, { model: 'viahttp', source: files.url('tiny.gguf') }, adminKey)
  t.is(res.status, 200)
  t.ok(res.headers.get('content-type')?.includes('application/x-ndjson'), 'NDJSON')
  const lines = (await res.text())
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>)
  t.alike(lines.at(-1), { status: 'success' }, 'ends with success')
  t.ok(
    lines.some((l) => l.completed === gguf.length && l.processor === proc.publicKey),
    'byte progress frames, tagged with the processor',
  )
  const whole = await post(
    `${url}/api/pull`,
    { model: 'viahttp', source: files.url('tiny.gguf'), stream: false },
    adminKey,
  )
  t.alike(await whole.json(), { status: 'success' }, 'stream: false answers once')
  const pulls = (await admin.audit({ limit: 100 })).entries.filter(
    (e) => e.action === 'model.pull' && e.target === 'viahttp' && e.outcome === 'ok',
  )
  t.alike(
    pulls.map((e) => e.details),
    [0, 1].map(() => ({ via: 'http', done: [proc.publicKey], failed: [] })),
    'audited, with the processors it was done and failed on',
  )
  const failed = await post(
    `${url}/api/pull`,
    { model: 'nothere', source: files.url('missing.gguf') },
    adminKey,
  )
  t.is(failed.status, 503, "a source that cannot be fetched: the processor's error, before any frame")
  t.ok(((await failed.json()) as { error?: string }).error?.includes('1 of 1 processor(s) failed'), 'named')
  const ollamaAnswer = await post(
    `${url}/api/generate`,
    { model: 'viahttp', prompt: 'abc', stream: false, options: GREEDY },
    userKey,
  )
  t.is(
    ((await ollamaAnswer.json()) as { response: string }).response,
    STEP1_TEXT,
    'the HTTP-pulled model answers',
  )
})

test('model pull: a pull stopped by its caller stops on the processor and resumes', {
  timeout: 90_000,
}, async (t) => {
  // ipull keeps whole 5 MB chunks: four and a bit, paced, stopped once three are in.
  const gguf = encodeTinyModel({ name: `padded ${'x'.repeat(20 * 1024 * 1024)}` })
  const files = await serveFiles(t, { 'big.gguf': gguf }, { chunk: 128 * 1024, tickMs: 20 })
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap)
  const proc = await spawnTinyProcessor(t, bootstrap)
  t.ok(await until(() => gateway.router.size === 1), 'the gateway sees the processor')
  const admin = await startClient(t, bootstrap, {}, { apiKey: await apiKeyFor(gateway) })
  const req = { model: 'big', source: files.url('big.gguf'), to: [proc.publicKey] }

  const first = admin.pullModel(req)
  for await (const p of first) if ((p.completed ?? 0) > 16 * 1024 * 1024) first.abort()
  const stopped = await first.result
  t.is(stopped.results[0]?.ok === false && stopped.results[0].error.code, 'ERR_CANCELLED', 'cancelled there')
  const before = files.bytesSent
  t.ok(before < gguf.length, `stopped midway: ${before} of ${gguf.length} bytes`)
  const models = await admin.models()
  t.absent(
    models.some((m) => m.name === 'big'),
    'the partial model is not served',
  )

  const again = await admin.pullModel(req).result
  t.is(again.results[0]?.ok, true, 'the second pull completes')
  const second = files.bytesSent - before
  t.ok(second < gguf.length, `and fetched ${second} of ${gguf.length} bytes`)
  const answer = await admin.generate({ model: 'big', prompt: 'abc', options: GREEDY })
  t.is(answer.text, STEP1_TEXT, 'the resumed model answers')
})
