/**
 * Models across the mesh, the inventory: the gateway asks every processor what it holds and
 * has loaded (`modelInventory`, `llm-mesh model ls`). Admins see each holder with its content
 * digest (sha256 of the GGUF file, equal for equal files), users only names and counts.
 */
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { copyFile, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import test from 'brittle'
import { TINY_MODEL_NAME, writeTinyModel } from '../../facilities/tiny-model/tiny-model.js'
import { apiKeyFor, BIN, spawnProcessor, startClient, startGateway, testnet, until } from '../helpers/mesh.js'

const EXTRA = 'extra'

/** `llm-mesh ARGS`, its exit code and output. */
const cli = (args: string[]) =>
  new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, [BIN, ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: unknown }).code ?? 1) : 0, stdout, stderr })
    })
  })

const sha256 = async (path: string) =>
  createHash('sha256')
    .update(await readFile(path))
    .digest('hex')

test('model inventory: holders, digests, loaded state; users see names and counts only', {
  timeout: 60_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap)
  const rootKey = await apiKeyFor(gateway, 'root', 'admin')
  const admin = await startClient(t, bootstrap, {}, { apiKey: rootKey })
  const user = await startClient(t, bootstrap, {}, { apiKey: await apiKeyFor(gateway, 'dave', 'user') })

  // Two folders: the same tiny file in both; a second model (another file) in the first only.
  const one = await t.tmp()
  const two = await t.tmp()
  const tinyFile = join(one, `${TINY_MODEL_NAME}.gguf`)
  await writeTinyModel(tinyFile)
  await copyFile(tinyFile, join(two, `${TINY_MODEL_NAME}.gguf`))
  await writeTinyModel(join(one, `${EXTRA}.gguf`), { step: 2 })
  const spawn = async (models: string) =>
    spawnProcessor(t, bootstrap, ['--store', await t.tmp(), '--models', models, '--backend', 'llamacpp'])
  const [a, b] = await Promise.all([spawn(one), spawn(two)])
  t.ok(await until(() => gateway.router.size === 2), 'both processors seen')

  const inv = await admin.modelInventory()
  t.alike(
    inv.models.map((m) => [m.name, m.held, m.loaded]),
    [
      [EXTRA, 1, 0],
      [TINY_MODEL_NAME, 2, 0],
    ],
    'each model with its number of holders; none loaded yet',
  )
  const tiny = inv.models.find((m) => m.name === TINY_MODEL_NAME)
  const extra = inv.models.find((m) => m.name === EXTRA)
  t.alike(
    tiny?.holders?.map((h) => h.processor),
    [a.publicKey, b.publicKey].sort(),
    'tiny: both hold it',
  )
  t.alike(
    extra?.holders?.map((h) => h.processor),
    [a.publicKey],
    'extra: the first only',
  )
  const digest = await sha256(tinyFile)
  t.alike(
    tiny?.holders?.map((h) => h.digest),
    [digest, digest],
    'equal files, equal digests: the sha256 of the file',
  )
  t.is(extra?.holders?.[0]?.digest, await sha256(join(one, `${EXTRA}.gguf`)), 'extra: its own sha256')
  const holder = tiny?.holders?.[0]
  t.is(holder?.format, 'gguf')
  t.is(holder?.size, (await readFile(tinyFile)).length, 'size: the file size')
  t.ok(holder?.quantization, `quantization: ${holder?.quantization}`)
  t.is(holder?.loaded, false)
  t.alike(
    inv.processors?.map((p) => [p.processor, p.state, p.backend, p.error]).sort(),
    [
      [a.publicKey, 'serving', 'llamacpp', undefined],
      [b.publicKey, 'serving', 'llamacpp', undefined],
    ].sort(),
    'admins see every processor answered',
  )
  t.is(inv.unanswered, 0)

  // A request loads `extra` on the one processor that holds it.
  const answer = await admin.generate({
    model: EXTRA,
    prompt: 'abc',
    options: { temperature: 0, num_predict: 3 },
  })
  t.is(answer.processor, a.publicKey)
  const loaded = await admin.modelInventory()
  const hot = loaded.models.find((m) => m.name === EXTRA)
  t.is(hot?.loaded, 1, 'extra: loaded on one processor')
  t.is(hot?.holders?.[0]?.loaded, true)
  t.ok(Date.parse(hot?.holders?.[0]?.expiresAt ?? '') > Date.now(), 'its keep-alive expiry is ahead')
  t.ok(typeof hot?.holders?.[0]?.sizeVram === 'number', 'with the memory it takes')

  // A user: names and counts, no processor keys, no digests.
  const seen = await user.modelInventory()
  t.alike(seen, {
    models: [
      { name: EXTRA, held: 1, loaded: 1 },
      { name: TINY_MODEL_NAME, held: 2, loaded: 0 },
    ],
    unanswered: 0,
  })
  t.absent(JSON.stringify(seen).includes(a.publicKey), 'no processor key for a user')

  // A processor that stops answering is shown as such; its models leave the inventory.
  await b.kill()
  const after = await admin.modelInventory()
  const missing = after.processors?.find((p) => p.processor === b.publicKey)
  t.ok(missing?.error, `the stopped processor did not answer: ${missing?.error}`)
  t.is(after.unanswered, 1)
  t.alike(
    after.models.find((m) => m.name === TINY_MODEL_NAME)?.holders?.map((h) => h.processor),
    [a.publicKey],
  )

  // The CLI: `model ls --json` prints the reply; the table names holders by key prefix.
  const via = ['--bootstrap', bootstrap.join(','), '--api-key', rootKey]
  const [json, table] = await Promise.all([
    cli(['model', 'ls', '--json', ...via]),
    cli(['model', 'ls', ...via]),
  ])
  t.is(json.code, 0, json.stderr)
  const printed = JSON.parse(json.stdout) as typeof after
  t.alike(
    printed.models.map((m) => [m.name, m.held, m.holders?.map((h) => h.digest)]),
    [
      [EXTRA, 1, [await sha256(join(one, `${EXTRA}.gguf`))]],
      [TINY_MODEL_NAME, 1, [digest]],
    ],
  )
  t.is(table.code, 0, table.stderr)
  const lines = table.stdout.split('\n')
  t.ok(lines[0]?.startsWith('MODEL'), lines[0])
  t.ok(
    lines.some(
      (l) =>
        l.startsWith(TINY_MODEL_NAME) &&
        l.includes(a.publicKey.slice(0, 8)) &&
        l.includes(digest.slice(0, 12)),
    ),
    `the tiny row names its holder and digest prefix: ${table.stdout}`,
  )
})

test('model CLI: bad arguments refused before any mesh is joined', async (t) => {
  const cases: [string[], string][] = [
    [['model', 'rm', 'x'], 'model rm: name the processors (--on KEY) or say --all'],
    [['model', 'cp', 'x'], 'usage: llm-mesh model cp SOURCE DESTINATION'],
    [['model', 'load', 'x', '--keep-alive', '5x'], '--keep-alive: a duration'],
    [['model', 'load', 'x', '--all'], '--all: for rm only'],
  ]
  const [help, ...runs] = await Promise.all([
    cli(['model', 'rm', '--help']),
    ...cases.map(([args]) => cli(args)),
  ])
  runs.forEach((r = { code: 0, stdout: '', stderr: '' }, i) => {
    const [args, why] = cases[i] as [string[], string]
    t.is(r.code, 2, `${args.join(' ')}: exit 2`)
    t.ok(r.stderr.includes(`ERR_BAD_REQUEST: ${why}`), r.stderr.trim())
  })
  t.is(help.code, 0)
  t.ok(help.stdout.includes('llm-mesh model rm NAME (--on KEY… | --all)'))
})
