/**
 * An interrupted mesh copy resumes: the receiving processor (a real child process) is
 * SIGKILLed mid-transfer and started again on the same store; the next copy fetches only the
 * blocks it lacked (workers/processor/model-share.ts over facilities/models/blob-store.ts).
 */
import { createHash } from 'node:crypto'
import { readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import test from 'brittle'
import { encodeTinyModel, TINY_MODEL_NAME, writeTinyModel } from '../../facilities/tiny-model/tiny-model.js'
import { apiKeyFor, spawnProcessor, startClient, startGateway, testnet, until } from '../helpers/mesh.js'

const MODEL = 'big'
/** Big enough that a loopback copy is still running when its first byte counts arrive (every 100 ms). */
const PAD_BYTES = 32 * 1024 * 1024

test('model copy: a copy cancelled, then its receiver killed mid-copy and restarted, fetches only what it lacked', {
  timeout: 90_000,
}, async (t) => {
  const began = Date.now()
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap)
  const admin = await startClient(t, bootstrap, {}, { apiKey: await apiKeyFor(gateway) })

  const holderModels = await t.tmp()
  await writeTinyModel(join(holderModels, `${TINY_MODEL_NAME}.gguf`))
  // Padded at the end: the folder still lists it (the header parses), and it takes no time to parse.
  const gguf = Buffer.concat([encodeTinyModel(), Buffer.alloc(PAD_BYTES, 0x5a)])
  await writeFile(join(holderModels, `${MODEL}.gguf`), gguf)
  const digest = `sha256:${createHash('sha256').update(gguf).digest('hex')}`
  const receiverModels = await t.tmp()
  await writeTinyModel(join(receiverModels, `${TINY_MODEL_NAME}.gguf`))
  const receiverStore = await t.tmp()
  const receiverArgs = ['--store', receiverStore, '--models', receiverModels, '--backend', 'llamacpp']
  const [holder, first] = await Promise.all([
    spawnProcessor(t, bootstrap, [
      '--store',
      await t.tmp(),
      '--models',
      holderModels,
      '--backend',
      'llamacpp',
    ]),
    spawnProcessor(t, bootstrap, receiverArgs),
  ])
  const seen = () => gateway.router.live().filter((e) => e.modelsKey)
  t.ok(await until(() => seen().length === 2), 'the gateway sees both processors')
  t.comment(`mesh up: ${Date.now() - began} ms`)
  const instance = gateway.router.find(first.publicKey).instance
  const t0 = Date.now()
  const at = (what: string) => t.comment(`${what}: ${Date.now() - t0} ms`)

  // A copy stopped by its caller stops on the receiver, which keeps what it fetched.
  const stop = admin.pullModel({ model: MODEL, to: [first.publicKey] })
  for await (const p of stop) if ((p.completed ?? 0) > 0 && p.completed !== p.total) stop.abort()
  const stopped = (await stop.result).results[0]
  t.is(stopped?.ok === false && stopped.error.code, 'ERR_CANCELLED', 'cancelled on the receiver')
  at('cancelled')

  // The next copy: the receiver killed once bytes have arrived.
  const run = admin.pullModel({ model: MODEL, to: [first.publicKey] })
  let before = 0
  for await (const p of run) {
    // A quarter in (or the first count, should one frame carry more): bytes in its core, not all.
    if ((p.completed ?? 0) >= gguf.length / 4 && p.completed !== p.total) {
      before = p.completed ?? 0
      await first.kill()
      run.abort()
      break
    }
  }
  run.result.catch(() => {})
  t.ok(before > 0 && before < gguf.length, `killed with ${before} of ${gguf.length} bytes copied`)
  t.absent((await readdir(receiverModels)).includes(`${MODEL}.gguf`), 'no model file in its folder')

  // The same processor again (same store, same identity), and the copy again.
  at('killed')
  const second = await spawnProcessor(t, bootstrap, receiverArgs)
  at('restarted')
  t.is(second.publicKey, first.publicKey, 'restarted with the same key')
  t.ok(
    await until(() => {
      const e = gateway.router.live().find((x) => x.id === second.publicKey)
      return e !== undefined && e.instance !== instance && e.modelsKey !== undefined
    }),
    'the gateway sees the restarted processor',
  )
  at('seen again')
  const summary = await admin.pullModel({ model: MODEL, to: [second.publicKey] }).result
  at('copied')
  const r = summary.results[0]
  t.ok(r?.ok, r && !r.ok ? `${r.error.code} ${r.error.message}` : 'copied after the restart')
  if (!r?.ok) return
  t.is(r.digest, digest, 'the digest matches')
  t.is(r.size, gguf.length)
  t.ok(
    (r.wireBytes ?? gguf.length) < gguf.length,
    `after the restart ${r.wireBytes} of ${gguf.length} bytes came over the wire`,
  )
  t.comment(`before the kill: ${before} bytes; after the restart: ${r.wireBytes} bytes`)
  t.ok((await readdir(receiverModels)).includes(`${MODEL}.gguf`), 'the model is in its folder')
  t.ok(holder.publicKey !== second.publicKey)
})
