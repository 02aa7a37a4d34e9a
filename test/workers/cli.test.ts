import { spawn } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import test from 'brittle'
import { BIN } from '../helpers/mesh.js'

const REPO = fileURLToPath(new URL('../../../', import.meta.url))

function run(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, args, {
      cwd: opts.cwd ?? REPO,
      env: { ...process.env, ...opts.env },
    })
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
  for (const cmd of ['up', 'chat', 'status', 'gateway', 'processor', 'bootstrap', 'model']) {
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
