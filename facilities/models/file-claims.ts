/**
 * One writer per model file in a process: a pull (a URL, `hf:`) and a copy from the mesh of
 * one name would otherwise write and rename into the same `NAME.gguf` at once, and one of
 * them would report a digest the file no longer has.
 */
import { basename, resolve } from 'node:path'
import { MeshError } from '../../kernel/errors.js'

/** Absolute paths of the model files being written in this process. */
const writing = new Set<string>()

/**
 * Claims `path` for one writer until the returned release is called.
 * @throws ERR_CONFLICT when a pull or a copy writes it already
 */
export function claimModelFile(path: string): () => void {
  const file = resolve(path)
  if (writing.has(file)) {
    const model = basename(file).replace(/\.gguf$/, '')
    throw new MeshError('ERR_CONFLICT', `model '${model}' is being pulled or copied here already`, {
      model,
      path: file,
    })
  }
  writing.add(file)
  return () => writing.delete(file)
}

/** Whether a pull or a copy writes `path` now. */
export function isModelFileClaimed(path: string): boolean {
  return writing.has(resolve(path))
}
