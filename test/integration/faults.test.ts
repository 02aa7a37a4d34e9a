/**
 * Faults with real processes, each bounded in time: a processor paused (SIGSTOP, as a network
 * partition or a stalled machine looks from the gateway) for less and for more than
 * `goneAfterMs`; a processor frozen between joining the DHT and the gateway's first `status`;
 * and the bootstrap dying under a running mesh, which a new processor still joins through the
 * DHT node of a worker run at a fixed port (a full DHT node, see docs/architecture.md).
 * Each test runs a mesh of its own name, so no other mesh on the machine shares its topics.
 *
 * (A processor that answers `status` but never answers inference is routing.test.ts's
 * 'hangs until the deadline': ERR_TIMEOUT at inferenceTimeoutMs, its breaker opens.)
 */
import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import test, { type Test } from 'brittle'
import type { InferResult } from '../../kernel/inference.js'
import type { MeshClient } from '../../workers/client/client.worker.js'
import type { MeshStream } from '../../workers/client/mesh-stream.js'
import type { GatewayWorker } from '../../workers/gateway/gateway.worker.js'
import {
  apiKeyFor,
  closedPort,
  FAST_REGISTRY,
  median,
  type SpawnedWorker,
  servedBy,
  spawnBootstrap,
  spawnProcessor,
  startClient,
  startGateway,
  testnet,
  until,
} from '../helpers/mesh.js'

/** Registry timings of these tests. */
const REGISTRY = FAST_REGISTRY
/**
 * The longest a paused processor can go unnoticed: the next beat starts within an interval,
 * and each of `maxMissed` beats waits its timeout (the next starts on the following tick).
 */
const DETECT_MS =
  REGISTRY.heartbeatIntervalMs +
  REGISTRY.maxMissed * (REGISTRY.heartbeatTimeoutMs + REGISTRY.heartbeatIntervalMs)
/** Slack for a busy 2-core machine (timers late, a child's start slow). */
const SLACK_MS = 1_500
/**
 * How soon a processor must serve while another one's record leads to a frozen process: a
 * lookup waits for its probes, and a probe of a frozen process fails only after ~4 s.
 */
const LATE_BOUND_MS = 10_000
/** The slow processor's wait before its first token: long enough to pause it mid-wait. */
const FIRST_TOKEN_DELAY_MS = 1_000

/** A mesh name of its own per test: no other mesh on this machine shares its topics. */
const meshName = () => `faults-${randomBytes(4).toString('hex')}`
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const ms = (xs: number[]) => `median ${median(xs)} ms, worst ${Math.max(...xs)} ms over ${xs.length}`

function stateOf(gateway: GatewayWorker, publicKey: string): string {
  return gateway.router.list().find((p) => p.publicKey === publicKey)?.state ?? 'dropped'
}

function inflightOn(gateway: GatewayWorker, publicKey: string): number {
  return gateway.router.list().find((p) => p.publicKey === publicKey)?.inflight ?? 0
}

/** Pauses a child process (its event loop and sockets freeze; the kernel still queues its packets). */
function pause(p: SpawnedWorker): number {
  p.child.kill('SIGSTOP')
  return Date.now()
}

function resume(p: SpawnedWorker): number {
  p.child.kill('SIGCONT')
  return Date.now()
}

async function echoProcessor(
  t: Test,
  mesh: string,
  bootstrap: string[],
  extra: string[] = [],
): Promise<SpawnedWorker> {
  return spawnProcessor(t, bootstrap, [
    '--store',
    await t.tmp(),
    '--backend',
    'echo',
    '--mesh',
    mesh,
    ...extra,
  ])
}

/** A gateway in this process and a client pinned to it, with no rate limit in the way. */
async function gatewayAndClient(
  t: Test,
  mesh: string,
  bootstrap: string[],
  extra: Record<string, unknown> = {},
): Promise<{ gateway: GatewayWorker; client: MeshClient }> {
  const gateway = await startGateway(t, bootstrap, { mesh, registry: REGISTRY, ...extra })
  const client = await startClient(
    t,
    bootstrap,
    { mesh, gateway: gateway.publicKeyHex },
    { apiKey: await apiKeyFor(gateway, 'admin', 'admin', { rpm: null, tpm: null }) },
  )
  return { gateway, client }
}

/** A processor config file that makes the first token wait `delayMs`. */
async function slowConfig(t: Test, delayMs: number): Promise<string> {
  const file = join(await t.tmp(), 'processor.json')
  await writeFile(file, JSON.stringify({ backend: { throttle: { firstTokenDelayMs: delayMs } } }))
  return file
}

/** Reads a stream to its end: the text and the final result. */
async function readAll(stream: MeshStream): Promise<{ text: string; result: InferResult | null }> {
  let text = ''
  for await (const part of stream) {
    if (part.done) return { text, result: part.result }
    text += part.text
  }
  return { text, result: null }
}

const ask = (client: MeshClient, prompt = 'new') =>
  client.generate({ model: 'echo', prompt, timeoutMs: 5_000 }).then(
    (r) => r.processor ?? '',
    (e: Error & { code?: string }) => e.code ?? e.message,
  )

test('faults: a network partition simulated by pausing a process (SIGSTOP/SIGCONT)', {
  timeout: 150_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const mesh = meshName()
  const { gateway, client } = await gatewayAndClient(t, mesh, bootstrap, {
    routing: { strategy: 'round-robin' },
  })
  const conf = await slowConfig(t, FIRST_TOKEN_DELAY_MS)
  const [slow, fast] = await Promise.all([
    echoProcessor(t, mesh, bootstrap, ['--config', conf]),
    echoProcessor(t, mesh, bootstrap),
  ])
  t.ok(await until(() => gateway.router.size === 2, 15_000), 'both processors joined')
  const restarts: string[] = []
  gateway.router.events.on('restarted', (e: { id: string }) => restarts.push(e.id))

  // (a) Paused while idle, resumed within goneAfterMs: unreachable, then the same process serves.
  const detect: number[] = []
  const back: number[] = []
  const servedAgain: number[] = []
  for (let i = 0; i < 3; i++) {
    const stoppedAt = pause(slow)
    const seen = await until(() => stateOf(gateway, slow.publicKey) === 'unreachable', DETECT_MS + SLACK_MS)
    t.ok(seen, `pause ${i + 1}: unreachable within ${DETECT_MS + SLACK_MS} ms (${Date.now() - stoppedAt} ms)`)
    detect.push(Date.now() - stoppedAt)
    const answers = await Promise.all(Array.from({ length: 4 }, () => ask(client)))
    t.alike(
      answers,
      answers.map(() => fast.publicKey),
      'new requests go to the other processor',
    )
    const resumedAt = resume(slow)
    t.ok(
      await until(() => stateOf(gateway, slow.publicKey) === 'serving', REGISTRY.redialMaxMs + SLACK_MS),
      'serving again after SIGCONT',
    )
    back.push(Date.now() - resumedAt)
    const served = await servedBy(client, slow.publicKey, resumedAt, 2 * FIRST_TOKEN_DELAY_MS + SLACK_MS)
    t.ok(served !== null, `it answers a request again (${served} ms after SIGCONT)`)
    if (served !== null) servedAgain.push(served)
  }
  t.alike(restarts, [], "a resumed process is the same instance: never 'restarted'")
  t.comment(`paused → unreachable: ${ms(detect)} (bound ${DETECT_MS} + ${SLACK_MS} ms)`)
  t.comment(`resumed → serving: ${ms(back)}; → answering a request: ${ms(servedAgain)}`)

  // (b) Paused with a request waiting for its first token on it: the request moves and succeeds.
  let moved: { stream: MeshStream; prompt: string } | null = null
  for (let i = 0; i < 4 && !moved; i++) {
    const prompt = `moved ${i}`
    const stream = client.generate({ model: 'echo', prompt, stream: true, timeoutMs: 20_000 })
    const landed = await until(
      () => inflightOn(gateway, slow.publicKey) === 1 || inflightOn(gateway, fast.publicKey) === 1,
      2_000,
      5,
    )
    if (landed && inflightOn(gateway, slow.publicKey) === 1) moved = { stream, prompt }
    else await readAll(stream) // it went to the fast one: ask again (round-robin turns)
  }
  if (!moved) {
    t.fail('no request landed on the slow processor')
    return
  }
  const stoppedAt = pause(slow)
  const { text, result } = await readAll(moved.stream)
  const movedMs = Date.now() - stoppedAt
  t.is(text, moved.prompt, 'the waiting request succeeds whole')
  t.is(result?.processor, fast.publicKey, 'answered by the other processor')
  t.ok(movedMs <= DETECT_MS + SLACK_MS, `moved within the heartbeat bound (${movedMs} ms after SIGSTOP)`)
  t.comment(`paused with a waiting request → answered elsewhere: ${movedMs} ms`)
  resume(slow)
  t.ok(
    await until(() => stateOf(gateway, slow.publicKey) === 'serving', REGISTRY.redialMaxMs + SLACK_MS),
    'serving again after SIGCONT',
  )

  // (c) Paused longer than goneAfterMs: dropped; after SIGCONT found again on the DHT and serving.
  const longAt = pause(slow)
  const dropBound = DETECT_MS + REGISTRY.goneAfterMs + REGISTRY.heartbeatIntervalMs + SLACK_MS
  t.ok(
    await until(() => stateOf(gateway, slow.publicKey) === 'dropped', dropBound),
    `dropped within ${dropBound} ms (${Date.now() - longAt} ms)`,
  )
  const dropMs = Date.now() - longAt
  const answers = await Promise.all(Array.from({ length: 4 }, () => ask(client)))
  t.alike(
    answers,
    answers.map(() => fast.publicKey),
    'requests go to the other processor',
  )
  const resumedAt = resume(slow)
  // Found by the next lookup (lookupIntervalMs), probed, then one request on it.
  const foundBound = REGISTRY.lookupIntervalMs + 2 * FIRST_TOKEN_DELAY_MS + 2 * SLACK_MS
  const found = await servedBy(client, slow.publicKey, resumedAt, foundBound)
  t.ok(found !== null, `found again and serving ${found} ms after SIGCONT (bound ${foundBound} ms)`)
  t.comment(`paused ${dropMs} ms → dropped; resumed → serving again: ${found} ms`)
  t.alike(restarts, [], "still never 'restarted'")
})

test('faults: a processor frozen between joining the DHT and its first status is never sent work, and joins once it resumes', {
  timeout: 120_000,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const mesh = meshName()
  const { gateway, client } = await gatewayAndClient(t, mesh, bootstrap)
  const healthy = await echoProcessor(t, mesh, bootstrap)
  t.ok(await servedBy(client, healthy.publicKey, Date.now(), 15_000), 'the healthy processor serves')

  // Frozen as soon as it says it is ready (announced): before the gateway's next lookup.
  let frozen: SpawnedWorker | null = null
  for (let i = 0; i < 3 && !frozen; i++) {
    const p = await echoProcessor(t, mesh, bootstrap)
    pause(p)
    if (stateOf(gateway, p.publicKey) === 'dropped') frozen = p
    else {
      t.comment('the gateway probed it before it froze: another one')
      await p.kill()
    }
  }
  if (!frozen) {
    t.fail('could not freeze a processor before its first probe')
    return
  }
  const frozenAt = Date.now()
  // Several lookups find its record and probe it while it is frozen.
  const outcomes: string[] = []
  while (Date.now() - frozenAt < 4 * REGISTRY.lookupIntervalMs) {
    outcomes.push(await ask(client))
    await sleep(20)
  }
  t.ok(
    outcomes.every((o) => o === healthy.publicKey),
    `every request answered by the healthy processor (${outcomes.length}, none failed)`,
  )
  t.is(stateOf(gateway, frozen.publicKey), 'dropped', 'the frozen processor is not in the registry')

  // Another processor joins while the frozen one's probe is pending.
  const startedAt = Date.now()
  const late = await echoProcessor(t, mesh, bootstrap)
  // Its start, the lookup that finds it, and a lookup still waiting on the frozen one's probe.
  const lateMs = await servedBy(client, late.publicKey, startedAt, LATE_BOUND_MS)
  t.ok(
    lateMs !== null,
    `a processor started meanwhile serves within ${LATE_BOUND_MS} ms (${lateMs} ms after its start)`,
  )
  t.comment(`a processor started while another is frozen unprobed: serving ${lateMs} ms after its start`)

  const resumedAt = resume(frozen)
  const joinedMs = await servedBy(client, frozen.publicKey, resumedAt, LATE_BOUND_MS)
  t.ok(
    joinedMs !== null,
    `resumed, it joins and serves (${joinedMs} ms after SIGCONT, frozen ${resumedAt - frozenAt} ms)`,
  )
  t.comment(`frozen ${resumedAt - frozenAt} ms before its first probe; serving ${joinedMs} ms after SIGCONT`)
})

test('faults: the bootstrap stopping after the mesh formed (the mesh keeps serving, new workers can still join through other DHT nodes)', {
  timeout: 120_000,
}, async (t) => {
  const boot = await spawnBootstrap(t)
  const mesh = meshName()
  // The gateway and the first processor run full DHT nodes: a fixed port, reachable.
  const { gateway, client } = await gatewayAndClient(t, mesh, boot.bootstrap, {
    net: { port: await closedPort() },
  })
  const conf = join(await t.tmp(), 'processor.json')
  await writeFile(conf, JSON.stringify({ net: { port: await closedPort() } }))
  const first = await echoProcessor(t, mesh, boot.bootstrap, ['--config', conf])
  t.ok(await servedBy(client, first.publicKey, Date.now(), 15_000), 'the processor serves')
  const status = await gateway.net
    .peer(Buffer.from(first.publicKey, 'hex'))
    .request<{ dhtAddress?: string | null }>('status', null, { timeout: 5_000 })
  const viaProcessor = status.dhtAddress
  t.ok(
    viaProcessor && /^127\.0\.0\.1:\d+$/.test(viaProcessor),
    `its status names its DHT node (${viaProcessor})`,
  )
  const viaGateway = gateway.net.dhtAddress
  t.ok(viaGateway, `the gateway's DHT node is a full one (${viaGateway?.host}:${viaGateway?.port})`)

  await boot.kill()
  const killedAt = Date.now()
  // The connection to the processor outlives the DHT that found it: heartbeats and requests go on.
  const outcomes: string[] = []
  while (Date.now() - killedAt < 10 * REGISTRY.heartbeatIntervalMs) {
    outcomes.push(await ask(client))
    await sleep(20)
  }
  t.ok(
    outcomes.every((o) => o === first.publicKey),
    `the gateway keeps serving through the processor (${outcomes.length} requests over ${Date.now() - killedAt} ms)`,
  )
  t.is(stateOf(gateway, first.publicKey), 'serving', 'the processor stays serving')

  // A new processor joins the mesh through the first processor's DHT node.
  const startedAt = Date.now()
  const joiner = await echoProcessor(t, mesh, [viaProcessor as string])
  const readyMs = Date.now() - startedAt
  const served = await servedBy(client, joiner.publicKey, startedAt, 40_000)
  t.ok(served !== null, `a processor bootstrapped through it serves (${served} ms after its start)`)
  t.comment(`bootstrap gone: a new processor ready after ${readyMs} ms, serving after ${served} ms`)
  const both = await Promise.all(Array.from({ length: 6 }, () => ask(client)))
  t.ok(both.includes(joiner.publicKey) && both.includes(first.publicKey), 'both processors serve')
})
