import test from 'brittle'
import DHT from 'hyperdht'
import { pino } from 'pino'
import {
  type CallContext,
  NetFacility,
  STREAM_CHUNK,
  type StreamChunk,
} from '../../facilities/net.facility.js'
import { testnet as startTestnet, type T } from '../helpers/mesh.js'

const logger = pino({ level: 'silent' })

async function pair(t: T) {
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
  return { server: await make(), client: await make(), third: await make() }
}

test('net: batched replies reach their own callers, a long call holds none back, a caller leaving is harmless', async (t) => {
  const { server, client, third } = await pair(t)
  let release: () => void = () => {}
  const held = new Promise<void>((resolve) => {
    release = resolve
  })
  await server.serve({
    echo: async (payload) => ({ echoed: payload }),
    // Streams two chunks, then waits for the test before it answers.
    slow: async (payload, ctx: CallContext) => {
      const { id } = payload as { id: string }
      ctx.emit(STREAM_CHUNK, { id, seq: 0, text: 'a' })
      ctx.emit(STREAM_CHUNK, { id, seq: 1, text: 'b' })
      await held
      return { done: true }
    },
    fail: async () => {
      throw new Error('boom')
    },
  })
  const peer = client.peer(server.publicKey)

  const chunks: StreamChunk[] = []
  const slow = peer.stream<{ done: boolean }>('slow', {}, { onChunk: (c) => chunks.push(c) })

  // 200 at once: their replies leave in batches, and none is lost, duplicated or crossed.
  const n = 200
  const replies = await Promise.all(
    Array.from({ length: n }, (_, i) => peer.request<{ echoed: { i: number } }>('echo', { i })),
  )
  t.alike(
    replies.map((r) => r.echoed.i),
    Array.from({ length: n }, (_, i) => i),
    'every caller got its own reply',
  )
  // Failures travel in the same batches.
  const failures = await Promise.allSettled(Array.from({ length: 20 }, () => peer.request('fail', null)))
  t.ok(
    failures.every((f) => f.status === 'rejected'),
    'failures answered as failures',
  )

  // The long call held nothing back: its chunks came, and the others were answered meanwhile.
  t.alike(
    chunks.map((c) => c.text),
    ['a', 'b'],
    'chunks of a call still running arrived',
  )
  release()
  t.alike(await slow, { done: true })

  // A caller that goes away with replies on their way does not hurt the server.
  const leaving = third.peer(server.publicKey)
  const pending = Array.from({ length: 50 }, (_, i) => leaving.request('echo', { i }).catch(() => null))
  leaving.destroy()
  await Promise.all(pending)
  const after = await client.peer(server.publicKey).request<{ echoed: string }>('echo', 'still here')
  t.is(after.echoed, 'still here', 'the server still answers')
})
