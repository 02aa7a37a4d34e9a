import { spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import test from 'brittle'
import { NODE_FLAGS } from '../../bin/lib/node-flags.js'
import { BIN } from '../helpers/mesh.js'

const REPO = fileURLToPath(new URL('../../../', import.meta.url))

function run(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string } = {}) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, args, {
      cwd: opts.cwd ?? REPO,
      env: { ...process.env, ...opts.env },
    })
    child.stdin.end(opts.input ?? '')
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => {
      stdout += d
    })
    child.stderr.on('data', (d: Buffer) => {
      stderr += d
    })
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}

test('cli: `npm start` runs node with the flags the workers it spawns get; the bin runs on any env', (t) => {
  const shebang = readFileSync(BIN, 'utf8').split('\n')[0] ?? ''
  const start = (
    JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { scripts: { start: string } }
  ).scripts.start
  t.ok(NODE_FLAGS.length > 0)
  t.is(start, `node ${NODE_FLAGS.join(' ')} dist/bin/llm-mesh.js up`)
  t.is(shebang, '#!/usr/bin/env node', 'no `env -S` (BusyBox has none)')
})

test('package: import { MeshClient } from "llm-mesh" works inside the checkout', async (t) => {
  const r = await run([
    '--input-type=module',
    '-e',
    "import { MeshClient, MeshError } from 'llm-mesh'; console.log(typeof MeshClient, typeof MeshError)",
  ])
  t.is(r.stdout.trim(), 'function function', r.stderr)
})

test('cli: --help for every command', async (t) => {
  const main = await run([BIN, '--help'])
  t.is(main.code, 0)
  t.ok(main.stdout.includes('Commands:'))
  for (const cmd of [
    'up',
    'chat',
    'status',
    'gateway',
    'processor',
    'bootstrap',
    'model',
    'user',
    'key',
    'usage',
  ]) {
    const r = await run([BIN, cmd, '--help'])
    t.is(r.code, 0, `${cmd} --help exits 0`)
    t.ok(r.stdout.startsWith('Usage: llm-mesh'), `${cmd} --help prints usage`)
  }
  const bad = await run([BIN, 'fly'])
  t.is(bad.code, 2)
  t.ok(bad.stderr.includes("unknown command 'fly'"))
})

test('cli: a bad config exits with a message naming the field', async (t) => {
  const dir = await t.tmp()
  const noBootstrap = await run([BIN, 'gateway', '--store', dir], {
    cwd: dir,
    env: { LLM_MESH_BOOTSTRAP: '' },
  })
  t.is(noBootstrap.code, 2)
  t.ok(noBootstrap.stderr.includes('ERR_BAD_CONFIG: config.bootstrap'), noBootstrap.stderr)

  const file = join(dir, 'bad.json')
  await writeFile(file, JSON.stringify({ bootstrap: ['127.0.0.1:1'], net: { port: 'eighty' } }))
  const badPort = await run([BIN, 'gateway', '--config', file, '--store', dir], { cwd: dir })
  t.is(badPort.code, 2)
  t.ok(badPort.stderr.includes('config.net.port'), badPort.stderr)

  const badFlag = await run([BIN, 'processor', '--parallel', 'many'], { cwd: dir })
  t.is(badFlag.code, 2)
  t.ok(badFlag.stderr.includes('--parallel'), badFlag.stderr)
})

test('cli: the operator contract of up, user, key, usage, chat and status', {
  timeout: 120_000,
}, async (t) => {
  const data = await t.tmp()
  const up = spawn(
    process.execPath,
    [BIN, 'up', '--no-chat', '--data', data, '--admin-password', 'operator-password', '--log-level', 'warn'],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  )
  const exited = new Promise<number | null>((resolve) => up.once('exit', (code) => resolve(code)))
  t.teardown(async () => {
    if (up.exitCode === null && up.signalCode === null) up.kill('SIGKILL')
    await exited
  })
  let out = ''
  const ready = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 90_000)
    up.stdout.on('data', (d: Buffer) => {
      out += d
      if (out.includes('llm-mesh ready')) {
        clearTimeout(timer)
        resolve(true)
      }
    })
    up.once('exit', () => resolve(false))
  })
  t.ok(ready, `up printed 'llm-mesh ready': ${out}`)
  t.absent(out.includes('shown once'), 'a given admin password is not printed')
  t.ok(existsSync(join(data, 'operator.key')), 'the operator key is in the data folder')

  const add = await run([
    BIN,
    'user',
    'add',
    'bob',
    '--password',
    'bob-password',
    '--rpm',
    '5',
    '--data',
    data,
  ])
  t.is(add.code, 0, add.stderr)
  const keyForBob = (...flags: string[]) =>
    run([BIN, 'key', 'create', '--user', 'bob', ...flags, '--data', data])
  const key = await keyForBob('--name', 'laptop')
  t.is(key.code, 0, key.stderr)
  t.ok(
    /^lmk_[0-9a-f]{16}_[A-Za-z0-9_-]{32}\n$/.test(key.stdout),
    `only the key on stdout: ${JSON.stringify(key.stdout)}`,
  )

  const limited = await keyForBob('--name', 'limited', '--rpm', '2', '--tpm', 'none')
  t.is(limited.code, 0, limited.stderr)
  const keys = await run([BIN, 'key', 'list', '--user', 'bob', '--json', '--data', data])
  t.is(keys.code, 0, keys.stderr)
  t.alike(
    (JSON.parse(keys.stdout) as Array<{ name: string; limits: object }>).find((k) => k.name === 'limited')
      ?.limits,
    { rpm: 2, tpm: null },
    'key create --rpm/--tpm: the key limits',
  )
  const badLimit = await keyForBob('--name', 'x', '--rpm', '0')
  t.is(badLimit.code, 2, 'bad input: exit code 2')
  t.ok(badLimit.stderr.includes('--rpm: a positive integer'), badLimit.stderr)

  const chat = await run([BIN, 'chat', '--data', data, '--api-key', key.stdout.trim()], {
    input: 'abc\n/usage\n',
  })
  t.is(chat.code, 0, chat.stderr)
  t.ok(chat.stdout.includes('defghijklmnopqrstuvwxyz'), chat.stdout)
  t.ok(chat.stdout.includes('usage of bob'), '/usage answers for the signed-in user')

  const usage = await run([BIN, 'usage', '--user', 'bob', '--json', '--data', data])
  t.is(usage.code, 0, usage.stderr)
  const report = JSON.parse(usage.stdout)
  t.is(report.user, 'bob')
  t.is(report.today.requests, 1)
  t.is(report.today.completionTokens, 23)
  t.is(report.limits.rpm.limit, 5, "the admin's limit override")

  const wrong = await run([
    BIN,
    'usage',
    '--data',
    data,
    '--api-key',
    'lmk_0000000000000000_notakeynotakeynotakeynotakey00',
  ])
  t.is(wrong.code, 1)
  t.ok(wrong.stderr.includes('ERR_AUTH_INVALID'), wrong.stderr)

  const status = await run([BIN, 'status', '--json', '--data', data])
  t.is(status.code, 0, status.stderr)
  t.is(JSON.parse(status.stdout).processors.length, 1)

  up.kill('SIGTERM')
  t.is(await exited, 0, 'up stops cleanly on SIGTERM')
  t.absent(existsSync(join(data, 'operator.key')), 'the operator key is gone with it')
  t.absent(existsSync(join(data, 'mesh.json')), 'and the mesh file')
})
