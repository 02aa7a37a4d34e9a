/**
 * One writer per model file in a process (facilities/models/file-claims.ts): a pull and a
 * copy from the mesh of one name are refused while the other writes it.
 */
import { readdir, writeFile } from 'node:fs/promises'
import { join, relative } from 'node:path'
import test from 'brittle'
import { pullGguf } from '../../../facilities/backends/llamacpp/model-pull.js'
import { claimModelFile, isModelFileClaimed } from '../../../facilities/models/file-claims.js'
import { rejectsWith } from '../../helpers/assert.js'

test('file claims: one writer per file, by its absolute path; released, it can be claimed again', async (t) => {
  const dir = await t.tmp()
  const path = join(dir, 'm.gguf')
  const release = claimModelFile(path)
  t.ok(isModelFileClaimed(path))
  const second = (() => {
    try {
      claimModelFile(relative(process.cwd(), path))
      return null
    } catch (err) {
      return (err as { code?: string }).code
    }
  })()
  t.is(second, 'ERR_CONFLICT', 'a second claim, by a relative path, is refused with a code')
  t.absent(isModelFileClaimed(join(dir, 'other.gguf')), 'another file is free')
  release()
  t.absent(isModelFileClaimed(path))
  claimModelFile(path)()
})

test('file claims: a pull into a file a copy writes is refused with ERR_CONFLICT, before it touches the folder', async (t) => {
  const dir = await t.tmp()
  await writeFile(join(dir, 'm.gguf.partial'), 'a copy writes this')
  const release = claimModelFile(join(dir, 'm.gguf'))
  t.teardown(release)
  await rejectsWith(
    t,
    pullGguf(dir, { model: 'm', source: 'http://127.0.0.1:9/m.gguf' }),
    'ERR_CONFLICT',
    'refused while the copy runs',
  )
  t.alike(await readdir(dir), ['m.gguf.partial'], "the copy's file is untouched")
})
