/**
 * Whether a processor has room for a model's bytes before it writes them. A copy puts the
 * file in the models folder and its blocks in the models Corestore (`<store>/models`) until
 * the copy is in place, so it needs the file's size twice when both are on one filesystem,
 * less the blocks a stopped copy left to resume from. Publishing a file for copies writes
 * its blocks into the store.
 */
import { stat, statfs } from 'node:fs/promises'
import { MeshError } from '../../kernel/errors.js'

/** Room left free beyond the copy: a filesystem filled to the last byte breaks everything on it. */
export const SPACE_MARGIN_BYTES = 64 * 1024 * 1024

/**
 * @param modelsDir where the file goes; `storeDir` where its blocks go (both exist)
 * @param stored bytes of the file's blocks the store holds already (a copy resumed)
 * @throws ERR_NO_SPACE naming the folder, the bytes needed and the bytes free
 */
export async function ensureRoomForCopy(
  modelsDir: string,
  storeDir: string,
  size: number,
  stored = 0,
): Promise<void> {
  const [models, store] = await Promise.all([stat(modelsDir), stat(storeDir)])
  const blocks = Math.max(0, size - stored)
  await ensureRoom(
    'the copy',
    models.dev === store.dev
      ? [{ dir: modelsDir, bytes: size + blocks }]
      : [
          { dir: modelsDir, bytes: size },
          { dir: storeDir, bytes: blocks },
        ],
  )
}

/**
 * Room for a file's blocks in the store before it is published for copies.
 * @throws ERR_NO_SPACE naming the folder, the bytes needed and the bytes free
 */
export function ensureRoomForPublish(storeDir: string, size: number): Promise<void> {
  return ensureRoom('publishing the file', [{ dir: storeDir, bytes: size }])
}

async function ensureRoom(what: string, needs: { dir: string; bytes: number }[]): Promise<void> {
  for (const { dir, bytes } of needs) {
    const fs = await statfs(dir)
    const free = fs.bavail * fs.bsize
    if (free < bytes + SPACE_MARGIN_BYTES)
      throw new MeshError(
        'ERR_NO_SPACE',
        `no room for ${what} in ${dir}: it needs ${bytes} bytes (and ${SPACE_MARGIN_BYTES} spare), ${free} are free`,
        { dir, needed: bytes, free },
      )
  }
}
