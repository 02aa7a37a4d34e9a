/**
 * Room for a model copy or a publish (facilities/models/disk-space.ts), against the free
 * space of the filesystem the test's folders are on.
 */
import { statfs } from 'node:fs/promises'
import test from 'brittle'
import {
  ensureRoomForCopy,
  ensureRoomForPublish,
  SPACE_MARGIN_BYTES,
} from '../../../facilities/models/disk-space.js'
import { rejectsWith } from '../../helpers/assert.js'

async function freeBytes(dir: string): Promise<number> {
  const fs = await statfs(dir)
  return fs.bavail * fs.bsize
}

test('disk space: a copy needs the file twice on one filesystem, less the blocks it resumes from', async (t) => {
  const models = await t.tmp()
  const store = await t.tmp()
  const free = await freeBytes(models)
  // Twice this is more than is free; once and a tenth is well within it.
  const size = Math.floor((free - SPACE_MARGIN_BYTES) * 0.6)
  await rejectsWith(t, ensureRoomForCopy(models, store, size), 'ERR_NO_SPACE', 'a new copy: no room')
  await t.execution(
    ensureRoomForCopy(models, store, size, Math.floor(size * 0.9)),
    'a copy with 90% of its blocks stored: room enough',
  )
  await t.execution(ensureRoomForCopy(models, store, size, size * 2), 'stored beyond the size counts as all')
})

test('disk space: publishing needs the file once in the store; the error names the folder and the figures', async (t) => {
  const store = await t.tmp()
  const free = await freeBytes(store)
  await t.execution(ensureRoomForPublish(store, Math.floor((free - SPACE_MARGIN_BYTES) * 0.5)))
  const err = await ensureRoomForPublish(store, free).then(
    () => null,
    (e: { code?: string; details?: { dir?: string; needed?: number } }) => e,
  )
  t.is(err?.code, 'ERR_NO_SPACE')
  t.is(err?.details?.dir, store)
  t.is(err?.details?.needed, free)
})
