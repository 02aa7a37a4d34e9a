/**
 * Health and maintenance: `/healthz`, `/readyz` and RPC `health` of a gateway follow its
 * processors (not ready without one serving), and a processor drained through the gateway
 * (admins only; or by SIGUSR2 on its machine) finishes what it runs while every new request
 * goes elsewhere, until it is undrained.
 */
import { spawn } from 'node:child_process'
import test from 'brittle'
import type { Health } from '../../kernel/wire.js'
import { rejectsWith } from '../helpers/assert.js'
import {
  apiKeyFor,
  BIN,
  closedPort,
  spawnProcessor,
  startClient,
  startGateway,
  testnet,
  until,
} from '../helpers/mesh.js'

/** Words the slow request echoes, at the processors' 20 tokens/s: ~2 s in flight. */
const LONG = Array.from({ length: 40 }, (_, i) => `w${i}`).join(' ')

async function probe(url: string, path: '/healthz' | '/readyz'): Promise<{ status: number; body: Health }> {
  const res = await fetch(`${url}${path}`)
  return { status: res.status, body: (await res.json()) as Health }
}

const echo = async (
  t: Parameters<Parameters<typeof test>[2]>[0],
  bootstrap: string[],
  extra: string[] = [],
) =>
  spawnProcessor(t, bootstrap, [
    '--store',
    await t.tmp(),
    '--backend',
    'echo',
    '--throttle-tps',
    '20',
    ...extra,
  ])

test('health: /readyz follows the processors; a drained processor finishes its request and gets no new one', {
  timeout: 120_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, { http: { enabled: true, port: 0 } })
  const url = gateway.httpUrl as string
  const admin = await apiKeyFor(gateway)
  const user = await apiKeyFor(gateway, 'someone', 'user')
  const client = await startClient(t, bootstrap, {}, { apiKey: admin })
  const userClient = await startClient(t, bootstrap, {}, { apiKey: user })

  const alive = await probe(url, '/healthz')
  t.is(alive.status, 200, '/healthz: alive without a processor')
  const empty = await probe(url, '/readyz')
  t.is(empty.status, 503, '/readyz: not ready without a processor')
  t.alike(
    empty.body.checks.map((c) => [c.name, c.ok]),
    [
      ['store', true],
      ['processors', false],
    ],
    'the store is open; no processor serves',
  )

  const a = await echo(t, bootstrap)
  const b = await echo(t, bootstrap)
  t.ok(await until(() => gateway.router.size === 2), 'both processors seen')
  t.ok(
    await until(async () => (await probe(url, '/readyz')).status === 200),
    '/readyz: ready with processors',
  )
  t.is((await client.gatewayHealth()).ready, true, 'RPC health says the same')

  // A slow request in flight; the processor running it is drained.
  const slow = client.generate({ model: 'echo', prompt: LONG })
  t.ok(await until(() => gateway.router.list().some((p) => p.inflight === 1), 5_000), 'the slow request runs')
  const busy = gateway.router.list().find((p) => p.inflight === 1)?.publicKey as string
  const other = busy === a.publicKey ? b.publicKey : a.publicKey
  await rejectsWith(t, userClient.drainProcessor(busy.slice(0, 12)), 'ERR_FORBIDDEN', 'a user may not drain')
  await rejectsWith(t, client.drainProcessor('nothex'), 'ERR_BAD_REQUEST', 'a key that is not hex')
  const drained = await client.drainProcessor(busy.slice(0, 12))
  t.alike(
    [drained.processor, drained.draining, drained.active, drained.state],
    [busy, true, 1, 'draining'],
    'drained by prefix: its one generation still runs, this gateway sees it draining at once',
  )
  const during = await Promise.all(
    Array.from({ length: 6 }, () => client.generate({ model: 'echo', prompt: 'ping' })),
  )
  t.alike(
    during.map((r) => r.processor),
    Array(6).fill(other),
    'every new request goes to the other processor',
  )
  const finished = await slow
  t.is(finished.processor, busy, 'the request in flight finished on the drained processor')
  t.is(finished.text, LONG, 'whole')
  const status = await client.status()
  t.is(status.processors.find((p) => p.publicKey === busy)?.state, 'draining', 'status shows it draining')
  t.is(status.health?.ready, true, 'the gateway stays ready: the other serves')

  const back = await client.drainProcessor(busy, false)
  t.alike([back.draining, back.state], [false, 'serving'], 'undrained')
  let servedAgain = false
  for (let i = 0; i < 20 && !servedAgain; i++) {
    const [x, y] = await Promise.all([
      client.generate({ model: 'echo', prompt: 'ping' }),
      client.generate({ model: 'echo', prompt: 'ping' }),
    ])
    servedAgain = x.processor === busy || y.processor === busy
  }
  t.ok(servedAgain, 'an undrained processor is sent work again')

  // The last processor stops: not ready; a new one: ready again.
  await a.stop()
  await b.stop()
  t.ok(
    await until(async () => (await probe(url, '/readyz')).status === 503, 10_000),
    '/readyz: not ready once the last processor stopped',
  )
  t.is((await client.gatewayHealth()).ready, false, 'RPC health: not ready')
  await echo(t, bootstrap)
  t.ok(
    await until(async () => (await probe(url, '/readyz')).status === 200, 10_000),
    'ready again with a new one',
  )
})

test('health: SIGUSR2 drains and undrains a processor; --drain starts it drained; the CLI drains through the gateway', {
  timeout: 120_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, { http: { enabled: true, port: 0 } })
  const admin = await apiKeyFor(gateway)
  const p = await echo(t, bootstrap)
  const metricsPort = await closedPort()
  const started = await echo(t, bootstrap, ['--drain', '--metrics-port', String(metricsPort)])
  const own = `http://127.0.0.1:${metricsPort}`
  const state = (key: string) => gateway.router.list().find((v) => v.publicKey === key)?.state
  t.ok(await until(() => state(p.publicKey) === 'serving' && state(started.publicKey) === 'draining'), 'seen')
  const health = await gateway.net.peer(Buffer.from(started.publicKey, 'hex')).request<Health>('health', null)
  t.alike(
    [health.ready, health.draining, health.checks.map((c) => [c.name, c.ok])],
    [
      false,
      true,
      [
        ['backend', true],
        ['maintenance', false],
      ],
    ],
    'a processor started with --drain: its backend answers, it is not ready',
  )

  t.is((await probe(own, '/healthz')).status, 200, "the processor's /healthz (its metrics port): alive")
  t.is((await probe(own, '/readyz')).status, 503, 'its /readyz: not ready while drained')

  p.child.kill('SIGUSR2')
  t.ok(await until(() => state(p.publicKey) === 'draining', 5_000), 'SIGUSR2: draining')
  const none = await fetch(`${gateway.httpUrl}/readyz`)
  t.is(none.status, 503, 'no processor serves: the gateway is not ready')
  p.child.kill('SIGUSR2')
  t.ok(await until(() => state(p.publicKey) === 'serving', 5_000), 'SIGUSR2 again: serving')

  // The CLI, through the gateway.
  const cli = (...args: string[]) =>
    new Promise<{ code: number | null; out: string }>((resolve) => {
      const child = spawn(process.execPath, [
        BIN,
        ...args,
        '--bootstrap',
        bootstrap.join(','),
        '--api-key',
        admin,
      ])
      let out = ''
      child.stdout.on('data', (d: Buffer) => {
        out += d
      })
      child.stderr.resume()
      child.once('exit', (code) => resolve({ code, out }))
    })
  const undrained = await cli('processor', 'undrain', started.publicKey.slice(0, 16), '--json')
  t.is(undrained.code, 0, 'processor undrain exits 0')
  t.is((JSON.parse(undrained.out) as { draining: boolean }).draining, false, 'its JSON says serving')
  t.is(state(started.publicKey), 'serving', 'the gateway sends it work again')
  t.is((await probe(own, '/readyz')).status, 200, 'its /readyz: ready once undrained')
  const bad = await cli('processor', 'drain', 'ffffffffffff')
  t.is(bad.code === 0, false, 'an unknown processor: the CLI fails')
})
