/**
 * Copies of a model between processors of the mesh (workers/gateway/model-copy.ts,
 * workers/processor/model-share.ts): `modelPull { replicas }` without a source copies a
 * GGUF one llama.cpp processor holds onto others, verified, and each copy answers the same.
 */
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import test from 'brittle'
import { TINY_MODEL_NAME, writeTinyModel } from '../../facilities/tiny-model/tiny-model.js'
import type { TaggedProgress } from '../../workers/client/model-pull.js'
import { rejectsWith } from '../helpers/assert.js'
import { apiKeyFor, BIN, spawnProcessor, startClient, startGateway, testnet, until } from '../helpers/mesh.js'

const MODEL = 'shared'

test('model copy: pull --replicas 3 copies a GGUF from its holder to two processors; same digest, same greedy text, three holders', {
  timeout: 60_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap)
  const adminKey = await apiKeyFor(gateway)
  const admin = await startClient(t, bootstrap, {}, { apiKey: adminKey })
  const bob = await startClient(t, bootstrap, {}, { apiKey: await apiKeyFor(gateway, 'bob', 'user') })

  // Three folders with the tiny model; the first also holds MODEL (another model: step 2).
  const folders = [await t.tmp(), await t.tmp(), await t.tmp()]
  for (const dir of folders) await writeTinyModel(join(dir, `${TINY_MODEL_NAME}.gguf`))
  const file = join(folders[0] as string, `${MODEL}.gguf`)
  await writeTinyModel(file, { step: 2 })
  const bytes = await readFile(file)
  const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`
  const spawn = async (models: string) =>
    spawnProcessor(t, bootstrap, ['--store', await t.tmp(), '--models', models, '--backend', 'llamacpp'])
  const procs = await Promise.all(folders.map(spawn))
  const [holder, ...receivers] = procs.map((p) => p.publicKey) as [string, string, string]
  t.ok(
    await until(() => gateway.router.live().filter((e) => e.modelsKey).length === 3),
    'the gateway sees three processors, each with a models key',
  )

  await rejectsWith(t, bob.pullModel({ model: MODEL, replicas: 3 }).result, 'ERR_FORBIDDEN', 'users may not')

  const started = Date.now()
  const run = admin.pullModel({ model: MODEL, replicas: 3 })
  const frames: TaggedProgress[] = []
  for await (const p of run) frames.push(p)
  const summary = await run.result
  t.comment(`copied ${bytes.length} bytes to two processors in ${Date.now() - started} ms`)
  t.is(summary.results.length, 2, 'two copies')
  t.alike(
    summary.results.map((r) => r.processor).sort(),
    [...receivers].sort(),
    'onto the two that lacked it',
  )
  for (const r of summary.results) {
    t.ok(r.ok, `${r.processor.slice(0, 8)}: ${r.ok ? 'copied' : `${r.error.code} ${r.error.message}`}`)
    if (!r.ok) continue
    t.is(r.digest, digest, 'the same digest')
    t.is(r.size, bytes.length, 'the same size')
    t.is(r.from, holder, 'from the holder')
    t.is(r.wireBytes, bytes.length, 'every byte over the wire')
  }
  for (const key of receivers) {
    const mine = frames.filter((f) => f.processor === key && f.total !== undefined)
    t.is(mine.at(-1)?.completed, bytes.length, `${key.slice(0, 8)}: byte progress reaches the size`)
  }

  // Each holder answers the same greedy text, asked directly (the gateway's own connection).
  const texts = await Promise.all(
    procs.map(async (p) => {
      const reply = await gateway.net
        .peer(Buffer.from(p.publicKey, 'hex'))
        .request<{ text: string }>('infer', {
          kind: 'generate',
          model: MODEL,
          prompt: 'abc',
          options: { temperature: 0, num_predict: 12 },
        })
      return reply.text
    }),
  )
  t.ok((texts[0] ?? '').length > 0, `the holder answers ${JSON.stringify(texts[0])}`)
  t.alike(texts, [texts[0], texts[0], texts[0]], 'each copy answers the exact same greedy text')

  const inv = await admin.modelInventory()
  const entry = inv.models.find((m) => m.name === MODEL)
  t.is(entry?.held, 3, 'model ls: three holders')
  t.alike(
    entry?.holders?.map((h) => `sha256:${h.digest.replace(/^sha256:/, '')}`),
    [digest, digest, digest],
    'with one digest',
  )

  const there = await admin.pullModel({ model: MODEL, to: [holder] }).result
  t.alike(
    there.results,
    [{ processor: holder, ok: true, model: MODEL, wireBytes: 0 }],
    'to a holder: already there',
  )
  const withDigest = await admin.pullModel({ model: MODEL, to: [holder], digest }).result
  t.ok(withDigest.results[0]?.ok, 'with its digest: there already')
  const otherDigest = `sha256:${'0'.repeat(64)}`
  const conflict = await admin.pullModel({ model: MODEL, to: [holder], digest: otherDigest }).result
  const c = conflict.results[0]
  t.is(
    c && !c.ok && c.error.code,
    'ERR_CONFLICT',
    'with another digest: ERR_CONFLICT, nothing copied over it',
  )
  const again = await admin.pullModel({ model: MODEL, replicas: 3 }).result
  t.alike(again.results, [], 'replicas already met: nothing to do')
  t.ok(again.note?.includes('already on 3'), again.note)
  // The CLI, through the real binary: the same pull, nothing left to do, said so.
  const cli = await new Promise<{ code: number; stdout: string }>((resolve) => {
    const args = ['model', 'pull', MODEL, '--replicas', '3', '--json']
    const via = ['--bootstrap', bootstrap.join(','), '--api-key', adminKey]
    execFile(process.execPath, [BIN, ...args, ...via], { timeout: 20_000 }, (err, stdout) =>
      resolve({ code: err ? Number((err as { code?: unknown }).code ?? 1) : 0, stdout }),
    )
  })
  t.is(cli.code, 0, 'llm-mesh model pull --replicas 3 exits 0')
  t.ok(cli.stdout.includes('already on 3'), cli.stdout.trim())
  await rejectsWith(
    t,
    admin.pullModel({ model: MODEL, replicas: 4 }).result,
    'ERR_NOT_FOUND',
    'four asked, nobody left to take one',
  )
  await rejectsWith(
    t,
    admin.pullModel({ model: 'nowhere', replicas: 2 }).result,
    'ERR_NOT_FOUND',
    'nobody holds it',
  )
  await rejectsWith(
    t,
    admin.pullModel({ model: MODEL, replicas: 2, to: [holder] }).result,
    'ERR_BAD_REQUEST',
    'replicas with to',
  )
})
