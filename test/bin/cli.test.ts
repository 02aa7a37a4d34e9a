import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import test from 'brittle'
import { NODE_FLAGS } from '../../bin/lib/node-flags.js'
import { BIN, closedPort } from '../helpers/mesh.js'

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

/** `fn` over `items`, three at a time; the results in order. */
async function inThrees<T, R>(items: T[], fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = []
  for (let i = 0; i < items.length; i += 3) out.push(...(await Promise.all(items.slice(i, i + 3).map(fn))))
  return out
}

test('cli: --help for every command', { timeout: 120_000 }, async (t) => {
  const main = await run([BIN, '--help'])
  t.is(main.code, 0)
  t.ok(main.stdout.includes('Commands:'))
  const cmds = [
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
    'invite',
    'audit',
  ]
  // Three at a time: each is a node start and nothing else (one after another took 22 s beside
  // a second lane; all at once starved the test beside it).
  const helps = await inThrees(cmds, (cmd) => run([BIN, cmd, '--help']))
  cmds.forEach((cmd, i) => {
    const r = helps[i] as Awaited<ReturnType<typeof run>>
    t.is(r.code, 0, `${cmd} --help exits 0`)
    t.ok(r.stdout.startsWith('Usage: llm-mesh'), `${cmd} --help prints usage`)
  })
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

test('cli: a --config that names a missing file is an error, not ignored', async (t) => {
  const dir = await t.tmp()
  const missing = join(dir, 'no-such.json')
  for (const cmd of ['gateway', 'processor']) {
    const r = await run([BIN, cmd, '--config', missing, '--bootstrap', '127.0.0.1:1'], { cwd: dir })
    t.is(r.code, 2, `${cmd}: exit 2`)
    t.ok(r.stderr.includes(`ERR_BAD_CONFIG: config file ${missing} does not exist`), r.stderr)
  }
})

test('cli: bad flag values get our own coded errors naming the flag, before any mesh is joined', async (t) => {
  const data = await t.tmp()
  // Started three at a time, checked in order: each exits before it would join a mesh.
  const cases: [string[], string][] = []
  const expect = (args: string[], text: string) => cases.push([args, text])
  expect(
    ['key', 'create', '--name', 'x', '--expires-days', '-1'],
    "--expires-days: expected an integer from 1 to 36500, got '-1'",
  )
  expect(
    ['key', 'create', '--name', 'x', '--expires-days', '2.5'],
    "--expires-days: expected an integer from 1 to 36500, got '2.5'",
  )
  expect(['usage', '--from', '2026-13-45'], "--from: expected a date YYYY-MM-DD, got '2026-13-45'")
  expect(['usage', '--to', '2026-02-30'], "--to: expected a date YYYY-MM-DD, got '2026-02-30'")
  expect(
    ['usage', '--from', '2026-03-02', '--to', '2026-03-01'],
    '--from 2026-03-02 is after --to 2026-03-01',
  )
  expect(['usage', '--bogus'], "unknown flag '--bogus'")
  expect(['status', '--json=yes'], '--json: takes no value')
  expect(['invite', '--role', 'admin'], "--role: 'processor' or 'gateway', got 'admin'")
  const results = await inThrees(cases, ([args]) => run([BIN, ...args, '--data', data]))
  cases.forEach(([args, text], i) => {
    const r = results[i] as Awaited<ReturnType<typeof run>>
    t.is(r.code, 2, `${args.join(' ')}: exit 2`)
    t.ok(r.stderr.includes(`ERR_BAD_REQUEST: ${text}`), `${args.join(' ')}: ${r.stderr.trim()}`)
  })
})

test('cli: model tiny says the name the model is served as', async (t) => {
  const dir = await t.tmp()
  const path = join(dir, 'my-tiny.gguf')
  const r = await run([BIN, 'model', 'tiny', path])
  t.is(r.code, 0, r.stderr)
  t.ok(existsSync(path))
  t.ok(r.stdout.includes("serves it as 'my-tiny'"), r.stdout)
  const bad = await run([BIN, 'model', 'tiny', join(dir, 'model.bin')])
  t.is(bad.code, 2, 'a file a processor would not list: exit 2')
  t.ok(bad.stderr.includes('ERR_BAD_REQUEST') && bad.stderr.includes('NAME.gguf'), bad.stderr)
  t.absent(existsSync(join(dir, 'model.bin')), 'and nothing written')
})

/** The pid of a process that has exited. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' })
  await new Promise((resolve) => child.once('exit', resolve))
  return child.pid as number
}

test('cli: a mesh.json whose up is gone (killed) is said at once, with how to start it', async (t) => {
  const data = await t.tmp()
  await mkdir(join(data, 'logs'))
  await writeFile(
    join(data, 'mesh.json'),
    JSON.stringify({
      mesh: 'default',
      bootstrap: [`127.0.0.1:${await closedPort()}`],
      gateway: 'a'.repeat(64),
      pid: await deadPid(),
      startedAt: new Date().toISOString(),
    }),
  )
  for (const args of [['status'], ['usage'], ['key', 'list'], ['processor']]) {
    const started = Date.now()
    const r = await run([BIN, ...args, '--data', data], { cwd: data })
    const ms = Date.now() - started
    t.is(r.code, 1, `${args[0]}: exit 1`)
    t.ok(
      r.stderr.includes(`ERR_UNAVAILABLE: the mesh in ${data} is not running`) &&
        r.stderr.includes(`llm-mesh up --data ${data}`),
      `${args.join(' ')}: ${r.stderr.trim()}`,
    )
    // Generous for a busy machine: the old path waited ~23 s on the dead bootstrap.
    t.ok(ms < 15_000, `${args[0]}: at once (${ms} ms)`)
  }
})

test('cli: an unreachable bootstrap is named, and found sooner', async (t) => {
  const address = `127.0.0.1:${await closedPort()}`
  const started = Date.now()
  const r = await run([BIN, 'status', '--bootstrap', address, '--api-key', 'lmk_x'])
  const ms = Date.now() - started
  t.is(r.code, 1)
  t.ok(r.stderr.includes(`ERR_UNAVAILABLE: no DHT node answered at ${address}`), r.stderr)
  // The DHT's own bootstrap retries take ~6 s; before, the first lookup failed after ~22 s.
  t.ok(ms < 18_000, `failed after ${ms} ms`)
})

test('package: npm ci leaves no install-script note to puzzle over', async (t) => {
  const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as {
    allowScripts?: Record<string, boolean>
  }
  // node-llama-cpp's postinstall only offers to download or build binaries; we use its
  // prebuilt ones with build: 'never'.
  t.is(pkg.allowScripts?.['node-llama-cpp'], false, 'node-llama-cpp: install script denied')
  const npm = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
    const child = spawn('npm', ['install-scripts', 'ls', '--json'], {
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'ignore'],
    })
    let stdout = ''
    child.stdout.on('data', (d: Buffer) => {
      stdout += d
    })
    child.once('error', () => resolve({ code: null, stdout }))
    child.once('close', (code) => resolve({ code, stdout }))
  })
  if (npm.code !== 0) {
    t.comment('this npm has no install-scripts command: nothing more to check')
    return
  }
  const pending = (JSON.parse(npm.stdout || '{}') as { allowScripts?: unknown[] }).allowScripts ?? []
  t.alike(pending, [], 'npm install-scripts ls: nothing pending')
})

/** Resolves with what `child` printed on stdout once it includes `text`; null if it exits first. */
function waitForOutput(child: ChildProcess, text: string, timeoutMs: number): Promise<string | null> {
  let out = ''
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(null), timeoutMs)
    child.stdout?.on('data', (d: Buffer) => {
      out += d
      if (out.includes(text)) {
        clearTimeout(timer)
        resolve(out)
      }
    })
    child.once('exit', () => {
      clearTimeout(timer)
      resolve(null)
    })
  })
}

test('cli: the operator contract of up, user, key, usage, chat and status', {
  timeout: 240_000,
}, async (t) => {
  const data = await t.tmp()
  const up = spawn(
    process.execPath,
    [
      BIN,
      'up',
      '--no-chat',
      '--processors',
      '2',
      '--data',
      data,
      '--admin-password',
      'operator-password',
      '--log-level',
      'warn',
    ],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  )
  const exited = new Promise<number | null>((resolve) => up.once('exit', (code) => resolve(code)))
  t.teardown(async () => {
    if (up.exitCode === null && up.signalCode === null) up.kill('SIGKILL')
    await exited
  })
  let err = ''
  up.stderr.on('data', (d: Buffer) => {
    err += d
  })
  const out = (await waitForOutput(up, 'llm-mesh ready', 120_000)) ?? ''
  t.ok(out.includes('llm-mesh ready'), `up printed 'llm-mesh ready': ${out}`)
  t.absent(out.includes('shown once'), 'a given admin password is not printed')
  t.ok(existsSync(join(data, 'operator.key')), 'the operator key is in the data folder')
  const reasons = [0, 1].map((i) => new RegExp(`^processor-${i} backend: (.+)$`, 'm').exec(err)?.[1])
  t.ok(reasons[0], `one backend line per processor: ${err}`)
  t.is(reasons[0], reasons[1], 'both processors tell the same backend story')
  t.ok(err.includes('wrote the tiny TEST model'), 'up says once that it wrote the tiny model')

  // A processor joins the mesh `up` runs from the folder, as its help says.
  const joined = spawn(process.execPath, [BIN, 'processor', '--data', data, '--log-level', 'warn'], {
    cwd: await t.tmp(),
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let joinedErr = ''
  joined.stderr.on('data', (d: Buffer) => {
    joinedErr += d
  })
  const joinedExit = new Promise<void>((resolve) => joined.once('exit', () => resolve()))
  t.teardown(async () => {
    if (joined.exitCode === null && joined.signalCode === null) joined.kill('SIGKILL')
    await joinedExit
  })
  t.ok(await waitForOutput(joined, 'processor ready', 60_000), `processor --data serves: ${joinedErr}`)
  let seen = 0
  const deadline = Date.now() + 60_000
  while (seen !== 3 && Date.now() < deadline) {
    const r = await run([BIN, 'status', '--json', '--data', data])
    if (r.code === 0) seen = (JSON.parse(r.stdout) as { processors: unknown[] }).processors.length
  }
  t.is(seen, 3, "the gateway serves through the joined processor too (up's two and it)")

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

  const chat = await run([BIN, 'chat', '--data', data, '--api-key', key.stdout.trim(), '--verbose'], {
    // A line after /exit is read along with the rest but never sent (the ledger below counts one request).
    input: 'abc\n/usage\n/exit\nnot sent\n',
  })
  t.is(chat.code, 0, chat.stderr)
  t.ok(chat.stdout.includes('defghijklmnopqrstuvwxyz'), chat.stdout)
  t.ok(chat.stdout.includes('usage of bob'), '/usage answers for the signed-in user')
  t.ok(
    /\[request [0-9a-f]{32} · total [0-9.]+ ms: gateway [0-9.]+, queue [0-9.]+, retry [0-9.]+, upstream [0-9.]+ \(processor [0-9.]+, backend [0-9.]+\)\]/.test(
      chat.stdout,
    ),
    `--verbose: the request id and its timing (${chat.stdout})`,
  )

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
  t.is(JSON.parse(status.stdout).processors.length, 3)

  up.kill('SIGTERM')
  t.is(await exited, 0, 'up stops cleanly on SIGTERM')
  t.absent(existsSync(join(data, 'operator.key')), 'the operator key is gone with it')
  t.absent(existsSync(join(data, 'mesh.json')), 'and the mesh file')
})
