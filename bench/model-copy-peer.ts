/**
 * One side of a copy in bench/model-copy.ts, in a process of its own (as one
 * processor would be), driven over IPC by the bench:
 *
 * - `store-sender --dir D --bootstrap H:P --file F [--block-size B]`: its own
 *   Corestore and ModelBlobStore in D, publishes F (timed), serves its models
 *   over HyperDHT (serveModels); sends `{ type: 'ready', manifest, publicKey,
 *   publishMs }` and serves until the bench disconnects.
 * - `store-receiver --dir D --bootstrap H:P --server KEY --manifest JSON --dest P`:
 *   its own Corestore and ModelBlobStore in D, connects (connectModels) and
 *   fetches into P; the copy is timed from the connect to the verified file
 *   renamed in place. Sends `{ type: 'done', ms, sha256, wireBytes }`.
 * - `tcp-receiver --dest P` (or `--raw`): listens on loopback and times one
 *   connection's bytes from accept to the end: written to P.partial with a
 *   sha256 on the way and renamed in place, as the store does (raw: only
 *   counted). Sends `{ type: 'listening', port }`, then `done`.
 * - `tcp-sender --port N --file F`: streams F to that port.
 */
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { open, rename } from 'node:fs/promises'
import { connect, createServer, type Socket } from 'node:net'
import { join } from 'node:path'
import type { Duplex } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { parseArgs } from 'node:util'
import Corestore from 'corestore'
import DHT from 'hyperdht'
import { blobCorestore, ModelBlobStore, type ModelManifest } from '../facilities/models/blob-store.js'
import { connectModels, serveModels } from '../facilities/models/replicate.js'

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    dir: { type: 'string' },
    bootstrap: { type: 'string' },
    file: { type: 'string' },
    'block-size': { type: 'string' },
    server: { type: 'string' },
    manifest: { type: 'string' },
    dest: { type: 'string' },
    raw: { type: 'boolean', default: false },
    port: { type: 'string' },
  },
})

function send(msg: object): void {
  process.send?.(msg)
}

/** This process's CPU time so far, user + system, in ms. */
function cpuMs(): number {
  const { user, system } = process.cpuUsage()
  return (user + system) / 1000
}

function need(name: keyof typeof values): string {
  const v = values[name]
  if (typeof v !== 'string') throw new Error(`model-copy-peer: --${name} is required`)
  return v
}

/** The bench's end of the IPC channel closing is this process's signal to stop. */
function untilDisconnect(): Promise<void> {
  return new Promise((done) => process.once('disconnect', () => done()))
}

async function peer(dir: string) {
  const corestore = new Corestore(join(dir, 'corestore'))
  const store = blobCorestore(corestore)
  const bs = values['block-size']
  const models = new ModelBlobStore({ corestore: store, ...(bs ? { blockSize: Number(bs) } : {}) })
  await models.ready()
  const keyPair = DHT.keyPair(randomBytes(32))
  const [host, port] = need('bootstrap').split(':')
  const dht = new DHT({
    bootstrap: [{ host: host as string, port: Number(port) }],
    host: '127.0.0.1',
    firewalled: false,
    keyPair,
  })
  await dht.ready()
  return {
    store,
    models,
    dht,
    keyPair,
    async close() {
      await models.close()
      await dht.destroy()
      await corestore.close()
    },
  }
}

async function storeSender(): Promise<void> {
  const p = await peer(need('dir'))
  const t0 = performance.now()
  const manifest = await p.models.publish(need('file'))
  const publishMs = performance.now() - t0
  const server = await serveModels(p.dht, p.store, { keyPair: p.keyPair, allow: () => true })
  process.on('message', (msg: { type?: string }) => {
    if (msg?.type === 'cpu?') send({ type: 'cpu', cpuMs: cpuMs() })
  })
  send({ type: 'ready', manifest, publicKey: server.publicKey.toString('hex'), publishMs })
  await untilDisconnect()
  await server.close()
  await p.close()
}

async function storeReceiver(): Promise<void> {
  const p = await peer(need('dir'))
  const manifest = JSON.parse(need('manifest')) as ModelManifest
  const t0 = performance.now()
  const cpu0 = cpuMs()
  const conn = connectModels(p.dht, p.store, Buffer.from(need('server'), 'hex'), p.keyPair)
  let bytes = 0
  // LLM_MESH_BENCH_VERBOSE=1: the receiver's progress every second, on stderr.
  const tick = process.env.LLM_MESH_BENCH_VERBOSE
    ? setInterval(
        () => console.error(`receiver: ${bytes} bytes at ${Math.round(performance.now() - t0)} ms`),
        1000,
      )
    : null
  const res = await p.models
    .fetch(manifest, need('dest'), {
      onProgress: (b) => {
        bytes = b
      },
    })
    .finally(() => tick && clearInterval(tick))
  const ms = performance.now() - t0
  send({ type: 'done', ms, sha256: res.sha256, wireBytes: res.wireBytes, cpuMs: cpuMs() - cpu0 })
  await conn.close()
  await p.close()
}

/** One connection's bytes into `dest` (via `dest.partial`, hashed) or, raw, only counted. */
async function receiveTcp(sock: Socket, dest: string | null): Promise<{ bytes: number; sha256: string }> {
  const hash = createHash('sha256')
  let bytes = 0
  if (!dest) {
    for await (const chunk of sock) bytes += (chunk as Buffer).byteLength
    return { bytes, sha256: '' }
  }
  const fh = await open(`${dest}.partial`, 'w')
  try {
    for await (const chunk of sock) {
      hash.update(chunk as Buffer)
      await fh.write(chunk as Buffer)
      bytes += (chunk as Buffer).byteLength
    }
  } finally {
    await fh.close()
  }
  await rename(`${dest}.partial`, dest)
  return { bytes, sha256: hash.digest('hex') }
}

async function tcpReceiver(): Promise<void> {
  const dest = values.raw ? null : need('dest')
  const server = createServer()
  const done = new Promise<void>((resolve, reject) => {
    server.once('connection', (sock) => {
      const t0 = performance.now()
      receiveTcp(sock, dest).then(({ bytes, sha256 }) => {
        send({ type: 'done', ms: performance.now() - t0, bytes, sha256 })
        resolve()
      }, reject)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const addr = server.address()
  send({ type: 'listening', port: typeof addr === 'object' && addr ? addr.port : 0 })
  await done
  server.close()
}

async function tcpSender(): Promise<void> {
  const sock = connect(Number(need('port')), '127.0.0.1')
  await pipeline(createReadStream(need('file'), { highWaterMark: 1024 * 1024 }), sock)
}

/** A HyperDHT server counting the bytes of its first connection (the store's transport without Hypercore). */
async function dhtReceiver(): Promise<void> {
  const p = await peer(need('dir'))
  const done = new Promise<void>((resolve, reject) => {
    const server = p.dht.createServer({}, (conn) => {
      const t0 = performance.now()
      const cpu0 = cpuMs()
      let bytes = 0
      const sock = conn as unknown as Duplex
      sock.on('data', (chunk: Buffer) => {
        bytes += chunk.byteLength
      })
      sock.on('error', reject)
      sock.on('end', () => {
        send({ type: 'done', ms: performance.now() - t0, bytes, sha256: '', cpuMs: cpuMs() - cpu0 })
        sock.end()
        resolve()
      })
    })
    server
      .listen(p.keyPair)
      .then(() => send({ type: 'listening', publicKey: server.publicKey.toString('hex') }), reject)
  })
  await done
  await p.close()
}

async function dhtSender(): Promise<void> {
  const p = await peer(need('dir'))
  const cpu0 = cpuMs()
  const conn = p.dht.connect(Buffer.from(need('server'), 'hex'), { keyPair: p.keyPair }) as unknown as Duplex
  // Closed once the receiver, having read to the end, ends its side too.
  const closed = new Promise((resolve) => conn.once('close', resolve))
  conn.resume()
  await pipeline(createReadStream(need('file'), { highWaterMark: 1024 * 1024 }), conn)
  await closed
  send({ type: 'sent', cpuMs: cpuMs() - cpu0 })
  await p.close()
}

const roles: Record<string, () => Promise<void>> = {
  'dht-receiver': dhtReceiver,
  'dht-sender': dhtSender,
  'store-sender': storeSender,
  'store-receiver': storeReceiver,
  'tcp-receiver': tcpReceiver,
  'tcp-sender': tcpSender,
}

const role = roles[positionals[0] ?? '']
if (!role) throw new Error(`model-copy-peer: unknown role ${positionals[0]}`)
role().then(
  () => {
    if (process.connected) process.disconnect()
  },
  (err) => {
    console.error(err)
    process.exit(1)
  },
)
