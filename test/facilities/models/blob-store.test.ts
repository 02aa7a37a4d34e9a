import { createHash, randomBytes } from 'node:crypto'
import { access, readFile, stat, utimes, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Transform } from 'node:stream'
import type { Test } from 'brittle'
import test from 'brittle'
import Corestore from 'corestore'
import type { BlobCorestore } from 'hyperblobs'
import { blobCorestore, ModelBlobStore, type ModelManifest } from '../../../facilities/models/blob-store.js'
import { parseManifest } from '../../../facilities/models/manifest.js'
import { replicateStores } from '../../../facilities/models/replicate.js'
import { rejectsWith } from '../../helpers/assert.js'
import { until } from '../../helpers/mesh.js'
import { tamperBlocks } from '../../helpers/tamper.js'

const MB = 1024 * 1024

interface Side {
  corestore: BlobCorestore
  models: ModelBlobStore
  close(): Promise<void>
}

/** A processor's store: a Corestore on `dir` and the model store on it; closed in teardown (again is a no-op). */
async function side(t: Test, dir: string, timeoutMs = 10_000): Promise<Side> {
  const corestore = blobCorestore(new Corestore(dir))
  const models = new ModelBlobStore({ corestore, timeoutMs })
  await models.ready()
  let closing: Promise<void> | null = null
  const close = () => {
    closing ??= models.close().then(() => corestore.close())
    return closing
  }
  t.teardown(close)
  return { corestore, models, close }
}

async function modelFile(dir: string, name: string, size: number): Promise<{ path: string; bytes: Buffer }> {
  const bytes = randomBytes(size)
  const path = join(dir, name)
  await writeFile(path, bytes)
  return { path, bytes }
}

/** Replicates a and b, but forwards only the first `cap` bytes a sends; `capped` resolves once it drops some. */
function cappedLink(
  a: BlobCorestore,
  b: BlobCorestore,
  cap: number,
): { capped: Promise<void>; close(): void } {
  const sa = a.replicate(true)
  const sb = b.replicate(false)
  let sent = 0
  let onCap = () => {}
  const capped = new Promise<void>((r) => (onCap = r))
  const gate = new Transform({
    transform(chunk: Buffer, _enc, done) {
      if (sent >= cap) {
        onCap()
        return done()
      }
      sent += chunk.byteLength
      done(null, chunk)
    },
  })
  for (const s of [sa, sb, gate]) s.on('error', () => {})
  sa.pipe(gate).pipe(sb).pipe(sa)
  return {
    capped,
    close() {
      sa.destroy()
      sb.destroy()
      gate.destroy()
    },
  }
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex')
const exists = (p: string) =>
  access(p).then(
    () => true,
    () => false,
  )

test('model blobs: publish on A, fetch on B over replication; bytes, digest and progress', async (t) => {
  const files = await t.tmp()
  const a = await side(t, await t.tmp())
  const b = await side(t, await t.tmp())
  const { path, bytes } = await modelFile(files, 'tiny.gguf', 4 * MB + 123)

  const manifest = await a.models.publish(path)
  t.is(manifest.name, 'tiny.gguf')
  t.is(manifest.size, bytes.length, 'size')
  t.is(manifest.sha256, sha256(bytes), 'sha256 computed while streaming')
  t.is(manifest.blob.blockLength, Math.ceil(bytes.length / manifest.blockSize), 'one block per blockSize')
  t.alike(parseManifest(JSON.parse(JSON.stringify(manifest))), manifest, 'the manifest survives JSON')
  t.alike(
    await a.models.publish(path),
    manifest,
    'publishing an unchanged file again gives the same manifest',
  )

  t.is(await b.models.storedBytes(manifest), 0, 'B holds none of it yet')
  t.is(await a.models.storedBytes(manifest), bytes.length, 'A holds all of it')
  const link = replicateStores(a.corestore, b.corestore)
  t.teardown(() => link.close(), { order: -1 })
  const dest = join(await t.tmp(), 'tiny.gguf')
  const seen: number[] = []
  const res = await b.models.fetch(manifest, dest, { onProgress: (n, total) => seen.push(n, total) })
  t.alike(await readFile(dest), bytes, 'the fetched file has the same bytes')
  t.is(res.sha256, manifest.sha256, 'and the same sha256')
  t.is(res.wireBytes, bytes.length, 'every byte came over replication once')
  t.is(res.rejectedBlocks, 0)
  t.is(seen.at(-2), bytes.length, 'progress reaches the size')
  t.is(seen.at(-1), bytes.length, 'against the size as total')
  t.absent(await exists(`${dest}.partial`), 'no partial file left')

  const again = await b.models.fetch(manifest, join(await t.tmp(), 'copy.gguf'))
  t.is(again.wireBytes, 0, 'a second fetch on B reads only local blocks')

  await utimes(path, new Date(), new Date(Date.now() + 5000))
  const republished = await a.models.publish(path)
  t.not(republished.key, manifest.key, 'a file touched since gets a core of its own')
  t.is(republished.sha256, manifest.sha256)
})

test('model blobs: a manifest whose sha256 is wrong is refused and nothing is put in place', async (t) => {
  const files = await t.tmp()
  const a = await side(t, await t.tmp())
  const b = await side(t, await t.tmp())
  const { path } = await modelFile(files, 'm.gguf', 512 * 1024)
  const manifest = await a.models.publish(path)
  const link = replicateStores(a.corestore, b.corestore)
  t.teardown(() => link.close(), { order: -1 })
  const dest = join(await t.tmp(), 'm.gguf')
  const wrong: ModelManifest = { ...manifest, sha256: sha256(Buffer.from('not the model')) }
  const err = await rejectsWith(
    t,
    b.models.fetch(wrong, dest),
    'ERR_INTEGRITY',
    'wrong digest: ERR_INTEGRITY',
  )
  t.is(err?.details?.actual, manifest.sha256, 'the error names the digest it got')
  t.absent(await exists(dest), 'no file in place')
  t.absent(await exists(`${dest}.partial`), 'no partial file either')
  await rejectsWith(t, b.models.fetch({ ...manifest, key: 'zz' }, dest), 'ERR_BAD_REQUEST', 'a malformed key')
  await rejectsWith(
    t,
    b.models.fetch({ ...manifest, size: manifest.size + 1 }, dest),
    'ERR_BAD_REQUEST',
    'sizes disagree',
  )
})

test('model blobs: the blob of another core, or blocks a peer tampered with, are refused', async (t) => {
  const files = await t.tmp()
  const a = await side(t, await t.tmp())
  const b = await side(t, await t.tmp(), 1500)
  const one = await a.models.publish((await modelFile(files, 'one.gguf', 256 * 1024)).path)
  const two = await a.models.publish((await modelFile(files, 'two.gguf', 256 * 1024)).path)
  const link = replicateStores(a.corestore, b.corestore)
  t.teardown(() => link.close(), { order: -1 })
  const dest = join(await t.tmp(), 'one.gguf')
  // Another file's core and blob id under this file's name and digest: the bytes are genuine, the file is not.
  await rejectsWith(
    t,
    b.models.fetch({ ...one, key: two.key, blob: two.blob }, dest),
    'ERR_INTEGRITY',
    'other core',
  )
  t.absent(await exists(dest), 'no file in place')

  // A sender that flips a byte of every block it serves (the proof is genuine, the data not): it wraps
  // the replication channel's data message of hypercore 11.37 (pinned), the last step before the wire.
  const served = a.corestore.get({ key: Buffer.from(one.key, 'hex') })
  await served.ready()
  t.teardown(() => served.close())
  const tampering = tamperBlocks(served)
  await link.close()
  const link2 = replicateStores(a.corestore, b.corestore)
  t.teardown(() => link2.close(), { order: -1 })
  const err = await rejectsWith(
    t,
    b.models.fetch(one, dest),
    'ERR_INTEGRITY',
    'tampered blocks: ERR_INTEGRITY',
  )
  t.ok(tampering.count() > 0, `the sender sent ${tampering.count()} tampered block(s)`)
  t.ok(Number(err?.details?.rejectedBlocks) > 0, `Hypercore rejected ${err?.details?.rejectedBlocks} of them`)
  t.absent(await exists(dest), 'no file in place')
  t.absent(await exists(`${dest}.partial`), 'no partial file')
  const core = b.corestore.get({ key: Buffer.from(one.key, 'hex') })
  await core.ready()
  t.absent(await core.has(one.blob.blockOffset), 'the tampered block was not stored')
  await core.close()
})

test('model blobs: a fetch interrupted by closing B resumes after reopening and fetches only what was missing', async (t) => {
  const files = await t.tmp()
  const a = await side(t, await t.tmp())
  const bDir = await t.tmp()
  const b1 = await side(t, bDir)
  const size = 4 * MB
  const { path, bytes } = await modelFile(files, 'big.gguf', size)
  const manifest = await a.models.publish(path)
  const dest = join(await t.tmp(), 'big.gguf')

  // A link that carries only the first third of what A sends, then drops the rest: B is cut off
  // mid-transfer, then stopped, as a receiver killed while copying.
  const link1 = cappedLink(a.corestore, b1.corestore, size / 3)
  const stop = new AbortController()
  let firstRun = 0
  const first = b1.models.fetch(manifest, dest, { signal: stop.signal, onProgress: (n) => (firstRun = n) })
  // Settled now, so a timeout while the test waits is an assertion below, not an unhandled rejection.
  const firstEnd = first.then(
    () => 'completed',
    (err: { code?: string }) => err.code,
  )
  await link1.capped
  // Blocks that crossed before the cap are stored (a loaded machine takes its time; they need
  // not include the first one, so the bytes written to the partial file may still be 0), then B stops.
  let storedBefore = 0
  await until(async () => {
    storedBefore = await b1.models.storedBytes(manifest)
    return storedBefore > 0
  }, 5_000)
  stop.abort()
  t.is(await firstEnd, 'ERR_CANCELLED', 'the first fetch stops mid-transfer')
  link1.close()
  await b1.close()
  t.ok(
    storedBefore > 0 && storedBefore < size && firstRun < size,
    `stopped midway: ${storedBefore} of ${size} bytes stored as blocks (${firstRun} written in order)`,
  )
  t.absent(await exists(dest), 'nothing in place after the interruption')

  const b2 = await side(t, bDir)
  const stored = await b2.models.storedBytes(manifest)
  t.ok(
    stored > 0 && stored < size,
    `the store holds part of the file to resume from (${stored} of ${size} bytes)`,
  )
  const link2 = replicateStores(a.corestore, b2.corestore)
  t.teardown(() => link2.close(), { order: -1 })
  let last = 0
  const res = await b2.models.fetch(manifest, dest, { onProgress: (n) => (last = n) })
  t.is(res.wireBytes + stored, size, 'what was stored and what came over the wire make the file')
  t.is(last, size, 'progress reaches the size')
  t.alike(await readFile(dest), bytes, 'the resumed file has the same bytes')
  t.is((await stat(dest)).size, size)
  t.ok(res.wireBytes > 0, 'the restart fetched what was missing')
  t.ok(
    res.wireBytes < size,
    `and only that: ${res.wireBytes} bytes over the wire after the restart, of ${size}`,
  )
  t.comment(`received after restart: ${res.wireBytes} of ${size} bytes`)
})

test('model blobs: concurrent publishes share one, concurrent fetches into one file conflict (dropPartial spares a running one), forget drops the blocks', async (t) => {
  const files = await t.tmp()
  const a = await side(t, await t.tmp())
  const b = await side(t, await t.tmp())
  const { path, bytes } = await modelFile(files, 'c.gguf', 1 * MB)
  const [m1, m2] = await Promise.all([a.models.publish(path), a.models.publish(path)])
  t.alike(m1, m2, 'two publishes of one file at once give one manifest')
  const core = a.corestore.get({ key: Buffer.from(m1.key, 'hex') })
  await core.ready()
  t.is(core.length, m1.blob.blockLength, 'and the core holds the file once')
  await core.close()

  const link = replicateStores(a.corestore, b.corestore)
  t.teardown(() => link.close(), { order: -1 })
  const dest = join(await t.tmp(), 'c.gguf')
  const first = b.models.fetch(m1, dest)
  await rejectsWith(
    t,
    b.models.fetch(m1, dest),
    'ERR_CONFLICT',
    'a second fetch into the same file is refused',
  )
  await b.models.dropPartial(dest)
  await first
  t.alike(await readFile(dest), bytes, 'the first one completes')

  await b.models.forget(m1)
  const held = b.corestore.get({ key: Buffer.from(m1.key, 'hex') })
  await held.ready()
  t.absent(await held.has(m1.blob.blockOffset), 'forget drops the local blocks')
  await held.close()
  const again = await b.models.fetch(m1, join(await t.tmp(), 'again.gguf'))
  t.is(again.wireBytes, bytes.length, 'so a later fetch downloads the file again')

  // The staging file a killed fetch left: removed when its blocks are dropped.
  const left = join(await t.tmp(), 'left.gguf')
  await writeFile(`${left}.partial`, bytes.subarray(0, 1000))
  await b.models.dropPartial(left)
  t.absent(await exists(`${left}.partial`), 'a leftover .partial is removed')
})

test('model blobs: closing the store stops a fetch that waits for peers', async (t) => {
  const files = await t.tmp()
  const a = await side(t, await t.tmp())
  const b = await side(t, await t.tmp(), 20_000)
  const manifest = await a.models.publish((await modelFile(files, 'w.gguf', 128 * 1024)).path)
  const dest = join(await t.tmp(), 'w.gguf')
  const started = Date.now()
  const waiting = b.models.fetch(manifest, dest) // no link to A: nobody serves it
  setTimeout(() => void b.close(), 200)
  await rejectsWith(t, waiting, 'ERR_CANCELLED', 'the fetch ends with the store')
  t.ok(Date.now() - started < 5000, `well before its 20 s timeout (${Date.now() - started} ms)`)
  t.absent(await exists(dest), 'no file in place')
})

/** Runs Corestore's idle-core GC to its end now (each cycle, every 2 s, is one strike of 4; private API). */
function collectIdleCores(store: BlobCorestore): void {
  const cores = (store as unknown as { cores: { _gcCycle(): void } }).cores
  for (let i = 0; i < 4; i++) cores._gcCycle()
}

test('model blobs: Corestore does not close a published core while a peer copies it', async (t) => {
  const a = await side(t, await t.tmp())
  const b = await side(t, await t.tmp(), 2000)
  const { path, bytes } = await modelFile(await t.tmp(), 'big.gguf', 8 * MB)
  const manifest = await a.models.publish(path)
  const link = replicateStores(a.corestore, b.corestore)
  t.teardown(() => link.close(), { order: -1 })
  let collected = false
  const onProgress = (n: number) => {
    if (n === 0 || collected) return
    collected = true
    // What 6 to 8 s of a copy used to meet: A's core, opened only to serve B, collected as idle.
    collectIdleCores(a.corestore)
  }
  const res = await b.models.fetch(manifest, join(await t.tmp(), 'big.gguf'), { onProgress })
  t.ok(collected, 'the GC ran mid-copy')
  t.is(res.sha256, sha256(bytes), 'and the copy completed')
})
