/**
 * Whether a processor has room for a model copy before it starts one: the file goes to the
 * models folder and its blocks to the models Corestore (`<store>/models`) until the copy is in
 * place, so a copy needs the file's size twice when both are on one filesystem.
 */
import { stat, statfs } from 'node:fs/promises'
import { MeshError } from '../../kernel/errors.js'

/** Room left free beyond the copy: a filesystem filled to the last byte breaks everything on it. */
export const SPACE_MARGIN_BYTES = 64 * 1024 * 1024

/**
 * @param modelsDir where the file goes; `storeDir` where its blocks go (both exist)
 * @throws ERR_NO_SPACE naming the folder, the bytes needed and the bytes free
 */
export async function ensureRoomForCopy(modelsDir: string, storeDir: string, size: number): Promise<void> {
  const [models, store] = await Promise.all([stat(modelsDir), stat(storeDir)])
  const needs =
    models.dev === store.dev
      ? [{ dir: modelsDir, bytes: 2 * size }]
      : [
          { dir: modelsDir, bytes: size },
          { dir: storeDir, bytes: size },
        ]
  for (const { dir, bytes } of needs) {
    const fs = await statfs(dir)
    const free = fs.bavail * fs.bsize
    if (free < bytes + SPACE_MARGIN_BYTES)
      throw new MeshError(
        'ERR_NO_SPACE',
        `no room for the copy in ${dir}: it needs ${bytes} bytes (and ${SPACE_MARGIN_BYTES} spare), ${free} are free`,
        { dir, needed: bytes, free },
      )
  }
}
