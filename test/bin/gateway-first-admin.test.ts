import { type ChildProcess, spawn } from 'node:child_process'
import test from 'brittle'
import { rejectsWith } from '../helpers/assert.js'
import { BIN, startClient, type T, testnet } from '../helpers/mesh.js'

interface Started {
  child: ChildProcess
  /** stdout up to and with the ready line. */
  stdout: string
  key: string
  stop(): Promise<void>
}

/** `llm-mesh gateway` as an operator starts it, until its ready line. */
async function startGateway(
  t: T,
  bootstrap: string[],
  store: string,
  env: NodeJS.ProcessEnv = {},
): Promise<Started> {
  const child = spawn(
    process.execPath,
    [BIN, 'gateway', '--bootstrap', bootstrap.join(','), '--store', store, '--log-level', 'warn'],
    { stdio: ['ignore', 'pipe', 'ignore'], env: { ...process.env, ...env } },
  )
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
    await exited
  }
  t.teardown(stop)
  let stdout = ''
  const key = await new Promise<string>((resolve, reject) => {
    child.stdout?.on('data', (d: Buffer) => {
      stdout += d
      const m = /gateway ready ([0-9a-f]{64})/.exec(stdout)
      if (m) resolve(m[1] as string)
    })
    child.once('exit', (code) => reject(new Error(`gateway exited with ${code}: ${stdout}`)))
  })
  return { child, stdout, key, stop }
}

test('gateway: the first start of an empty store creates admin with a password printed once; later starts create nothing', async (t) => {
  const { bootstrap } = await testnet(t)
  const store = await t.tmp()
  const first = await startGateway(t, bootstrap, store, { LLM_MESH_ADMIN_PASSWORD: '' })
  const password = /admin user 'admin' created; password \(shown once\): (\S+)/.exec(first.stdout)?.[1]
  t.ok(password, `printed: ${first.stdout}`)
  const client = await startClient(t, bootstrap, { gateway: first.key })
  const session = await client.login('admin', password as string)
  t.is(session.role, 'admin', 'the printed password signs in, as an admin')
  const audit = (await client.audit()).entries.map((e) => [e.action, e.actor, e.target, e.outcome])
  t.alike(audit, [['user.create', 'system', session.id, 'ok']], 'the audit log says the gateway made it')
  await first.stop()

  const second = await startGateway(t, bootstrap, store, {
    LLM_MESH_ADMIN_PASSWORD: 'ignored-on-later-starts',
  })
  t.absent(second.stdout.includes('admin'), `nothing created nor printed: ${second.stdout}`)
  const again = await startClient(t, bootstrap, { gateway: second.key })
  await again.login('admin', password as string)
  await rejectsWith(
    t,
    again.login('admin', 'ignored-on-later-starts'),
    'ERR_AUTH_INVALID',
    'the env is not applied',
  )
  t.is((await again.listUsers()).length, 1, 'one user')
})

test('gateway: LLM_MESH_ADMIN_PASSWORD sets the first admin password, which is not printed', async (t) => {
  const { bootstrap } = await testnet(t)
  const password = 'a-chosen-admin-password'
  const gw = await startGateway(t, bootstrap, await t.tmp(), { LLM_MESH_ADMIN_PASSWORD: password })
  t.ok(gw.stdout.includes('LLM_MESH_ADMIN_PASSWORD'), gw.stdout)
  t.absent(gw.stdout.includes(password), 'the password is not printed')
  const client = await startClient(t, bootstrap, { gateway: gw.key })
  t.is((await client.login('admin', password)).username, 'admin')
})
