import RPC from '@hyperswarm/rpc'
import test from 'brittle'
import DHT from 'hyperdht'
import { pino } from 'pino'
import { NetFacility } from '../../../facilities/net/net.facility.js'
import { MAX_REPLY_BYTES } from '../../../facilities/net/payload.js'
import type { MethodTable } from '../../../facilities/net/rpc-server.js'
import { STREAM_CHUNK, type StreamChunk } from '../../../facilities/net/streaming.js'
import { fromWireError } from '../../../facilities/net/wire-errors.js'
import { CancelToken } from '../../../kernel/cancel.js'
import type { MeshError } from '../../../kernel/errors.js'
import { testnet as startTestnet, type T } from '../../helpers/mesh.js'

const logger = pino({ level: 'silent' })

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Three NetFacilities on one loopback testnet: a server (serving `methods`) and two callers. */
async function nets(t: T, methods: MethodTable) {
  const { net: testnet } = await startTestnet(t)
  const bootstrap = testnet.bootstrap.map((b) => ({ host: b.host, port: b.port }))
  const make = async () => {
    const net = new NetFacility({
      bootstrap,
      mesh: 'net-test',
      keyPair: DHT.keyPair(),
      host: '127.0.0.1',
      firewalled: false,
      logger,
    })
    await net.ready()
    t.teardown(() => net.close(), { order: -1 })
    return net
  }
  const server = await make()
  await server.serve(methods)
  return { server, client: await make(), other: await make(), bootstrap }
}

/** A promise and the function that resolves it. */
function gate(): { wait: Promise<void>; open: () => void } {
  let open: () => void = () => {}
  const wait = new Promise<void>((resolve) => {
    open = resolve
  })
  return { wait, open }
}

test('net: concurrent replies reach their own callers, and a long call holds none back', async (t) => {
  const slowGate = gate()
  const { server, client } = await nets(t, {
    echo: async (payload) => ({ echoed: payload }),
    // Streams two chunks, then waits for the test before it answers.
    slow: async (payload, ctx) => {
      const { id } = payload as { id: string }
      ctx.emit(STREAM_CHUNK, { id, seq: 0, text: 'a' })
      ctx.emit(STREAM_CHUNK, { id, seq: 1, text: 'b' })
      await slowGate.wait
      return { done: true }
    },
    fail: async () => {
      throw new Error('boom')
    },
  })
  const peer = client.peer(server.publicKey)
  const chunks: StreamChunk[] = []
  const slow = peer.stream<{ done: boolean }>('slow', {}, { onChunk: (c) => chunks.push(c) })

  // 200 at once: none is lost, duplicated or crossed.
  const n = 200
  const replies = await Promise.all(
    Array.from({ length: n }, (_, i) => peer.request<{ echoed: { i: number } }>('echo', { i })),
  )
  t.alike(
    replies.map((r) => r.echoed.i),
    Array.from({ length: n }, (_, i) => i),
    'every caller got its own reply',
  )
  const failures = await Promise.allSettled(Array.from({ length: 20 }, () => peer.request('fail', null)))
  t.ok(
    failures.every((f) => f.status === 'rejected'),
    'failures are answered as failures',
  )
  // The long call held nothing back: its chunks came, and the others were answered meanwhile.
  t.alike(
    chunks.map((c) => c.text),
    ['a', 'b'],
  )
  slowGate.open()
  t.alike(await slow, { done: true })
})

test('net: large replies ready in the same turn all arrive (no write over secret-stream’s 16 MiB limit)', async (t) => {
  const release = gate()
  const { server, client } = await nets(t, {
    big: async (payload) => {
      await release.wait
      return 'x'.repeat((payload as { bytes: number }).bytes)
    },
  })
  const peer = client.peer(server.publicKey)
  // Three replies ready in the same turn: 1 kB, 7.5 MiB and 9 MiB (together over 16 MiB).
  const sizes = [1_000, 7.5 * 1024 * 1024, 9 * 1024 * 1024]
  const calls = sizes.map((bytes) => peer.request<string>('big', { bytes }, { timeout: 30_000 }))
  await sleep(200)
  release.open()
  const got = await Promise.all(calls)
  t.alike(
    got.map((s) => s.length),
    sizes,
    'every reply arrived whole, and the connection lived',
  )
})

test('net: a caller that leaves before its replies are ready does not hurt the server', async (t) => {
  const release = gate()
  let arrived = 0
  const { server, client, other } = await nets(t, {
    wait: async (payload) => {
      arrived++
      await release.wait
      return payload
    },
    echo: async (payload) => payload,
  })
  const leaving = other.peer(server.publicKey)
  const pending = Array.from({ length: 50 }, (_, i) => leaving.request('wait', { i }).catch(() => null))
  while (arrived < 50) await sleep(20)
  leaving.destroy()
  await sleep(50)
  // Fifty replies become ready together for a connection that is gone.
  release.open()
  await Promise.all(pending)
  await sleep(50)
  t.is(
    await client.peer(server.publicKey).request<string>('echo', 'still here'),
    'still here',
    'the server still answers',
  )
})

test('net: streams a caller starts from inside onChunk are not held until other calls end', async (t) => {
  const { server, client } = await nets(t, {
    ping: async () => 'pong',
    // Emits a chunk a few microtasks in, after the pings of its turn were answered.
    streamer: async (payload, ctx) => {
      const { id } = payload as { id: string }
      for (let i = 0; i < 5; i++) await Promise.resolve()
      ctx.emit(STREAM_CHUNK, { id, seq: 0, text: 'go' })
      return { ok: true }
    },
    // Sends its first chunk at once, answers a second later.
    slow: async (payload, ctx) => {
      const { id } = payload as { id: string }
      ctx.emit(STREAM_CHUNK, { id, seq: 0, text: 'first' })
      await sleep(1000)
      return { ok: true }
    },
  })
  const peer = client.peer(server.publicKey)
  await peer.request('ping', null)
  const started = performance.now()
  const firstChunkMs: number[] = []
  const slowCalls: Array<Promise<unknown>> = []
  const pings = Array.from({ length: 30 }, () => peer.request('ping', null))
  const streamer = peer.stream(
    'streamer',
    {},
    {
      onChunk: () => {
        // Two streams started synchronously from inside a chunk's delivery.
        for (let i = 0; i < 2; i++) {
          slowCalls.push(
            peer.stream('slow', {}, { onChunk: () => firstChunkMs.push(performance.now() - started) }),
          )
        }
      },
    },
  )
  await Promise.all([...pings, streamer])
  await Promise.all(slowCalls)
  t.is(firstChunkMs.length, 2)
  t.ok(
    firstChunkMs.every((ms) => ms < 600),
    `first chunks after ${firstChunkMs.map((ms) => ms.toFixed(0)).join(', ')} ms, not when the calls end (1 s)`,
  )
})

test('net: a call without onChunk is still named for cancel, and stray chunks for it are dropped', async (t) => {
  const started = gate()
  const cancelled = gate()
  let cancelledId: string | null = null
  let callId: string | null = null
  const { server, client } = await nets(t, {
    // Emits a chunk nobody asked for, then answers once its cancel arrives.
    gen: async (payload, ctx) => {
      const { id } = payload as { id: string }
      callId = id
      ctx.emit(STREAM_CHUNK, { id, seq: 0, text: 'stray' })
      started.open()
      await cancelled.wait
      return { cancelled: true }
    },
    cancel: async (payload) => {
      cancelledId = (payload as { id: string }).id
      cancelled.open()
      return null
    },
  })
  const peer = client.peer(server.publicKey)
  const token = new CancelToken()
  const call = peer.stream<{ cancelled: boolean }>('gen', { prompt: 'x' }, { cancel: token })
  await started.wait
  token.abort()
  t.alike(await call, { cancelled: true }, 'the callee answered the cancelled call')
  t.ok(callId, 'the call carried an id')
  t.is(cancelledId, callId, 'the cancel named that call')
  t.alike(await peer.stream('gen', {}, {}), { cancelled: true }, 'and without a token, its answer as is')
})

test('net: an empty or undecodable payload is ERR_BAD_REQUEST, not an internal error', async (t) => {
  const { server, bootstrap } = await nets(t, { echo: async (payload) => ({ echoed: payload }) })
  const dht = new DHT({ bootstrap, host: '127.0.0.1', firewalled: false })
  const rpc = new RPC({ dht })
  t.teardown(async () => {
    await rpc.destroy()
    await dht.destroy()
  })
  // Straight on the wire: our own PeerConnection never sends these.
  const client = rpc.connect(server.publicKey)
  for (const [label, payload] of [
    ['zero bytes', Buffer.alloc(0)],
    ['not JSON', Buffer.from('{nope')],
  ] as const) {
    const err = await client.request('echo', payload, { timeout: 5_000 }).then(
      () => null,
      (e: unknown) => fromWireError(e, 'echo'),
    )
    t.is(err?.code, 'ERR_BAD_REQUEST', `${label}: ${err?.message}`)
  }
  t.alike(
    JSON.parse((await client.request('echo', Buffer.from('1'))).toString()),
    { echoed: 1 },
    'still serves',
  )
})

test('net: a reply over MAX_REPLY_BYTES is ERR_PAYLOAD_TOO_LARGE, and the connection lives', async (t) => {
  // An answer sent whole with 20 alternatives per token: ~1.75 KB of JSON each.
  const alternative = { token: 'tok', logprob: -1.2345678 }
  const token = { token: 'tok', logprob: -0.5, topLogprobs: Array.from({ length: 20 }, () => alternative) }
  const { server, client } = await nets(t, {
    infer: async (payload) => {
      const tokens = (payload as { tokens: number }).tokens
      return { text: 'x', logprobs: Array.from({ length: tokens }, () => token) }
    },
  })
  const peer = client.peer(server.publicKey)
  // Some 9,600 tokens: over the ~16 MiB at which protomux-rpc would close the connection.
  const tokens = Math.ceil((17 * 1024 * 1024) / Buffer.byteLength(JSON.stringify(token)))
  t.ok(tokens * Buffer.byteLength(JSON.stringify(token)) > MAX_REPLY_BYTES)
  const err = await peer.request('infer', { tokens }, { timeout: 30_000 }).then(
    () => null,
    (e: unknown) => e as MeshError,
  )
  t.is(err?.code, 'ERR_PAYLOAD_TOO_LARGE', String(err?.message))
  t.ok(err?.message.includes('stream: true'), 'it says how to get the answer')
  const small = await peer.request<{ logprobs: unknown[] }>('infer', { tokens: 2 }, { timeout: 30_000 })
  t.is(small.logprobs.length, 2, 'the same connection still serves')
})
