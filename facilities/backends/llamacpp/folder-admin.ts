/**
 * An admin's changes to the models folder (`llm-mesh model rm|cp`): a model is deleted by
 * removing its file, once no request uses it (it is unloaded first); a copy is a second name
 * for the same file: a hard link in the folder, or a copy where links cannot be made.
 */
import { constants } from 'node:fs'
import { copyFile, link, stat, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { MeshError } from '../../../kernel/errors.js'
import { errorMessage, isRecord } from '../../../kernel/util.js'
import type { LoadedModels } from './loaded-models.js'
import { type ModelFolder, modelFileName } from './model-folder.js'

function codeOf(err: unknown): unknown {
  return isRecord(err) ? err.code : undefined
}

/**
 * Deletes the model's file, unloading it first.
 * @throws ERR_MODEL_NOT_FOUND, ERR_CONFLICT while a request uses it, ERR_BACKEND_UNAVAILABLE
 */
export async function deleteModelFile(
  folder: ModelFolder,
  models: LoadedModels,
  name: string,
): Promise<void> {
  const file = await folder.find(name)
  await models.unloadIdle(file.name)
  try {
    await unlink(file.path)
  } catch (err) {
    if (codeOf(err) === 'ENOENT') throw MeshError.modelNotFound(name)
    throw MeshError.backendUnavailable(`cannot delete ${file.path}: ${errorMessage(err)}`, err)
  }
}

/**
 * Makes `destination` another name of `source`: DESTINATION.gguf, a hard link to the source
 * file (or a copy, across devices). Never overwrites.
 * @throws ERR_MODEL_NOT_FOUND (source), ERR_BAD_REQUEST (names), ERR_CONFLICT (destination exists)
 */
export async function copyModelFile(folder: ModelFolder, source: string, destination: string): Promise<void> {
  const file = await folder.find(source)
  let name: string
  try {
    name = modelFileName(destination)
  } catch {
    throw MeshError.badRequest(`destination: '${destination}' cannot name a model file of the folder`)
  }
  const target = join(folder.dir, `${name}.gguf`)
  const exists = await stat(target).then(
    () => true,
    () => false,
  )
  if (exists) throw new MeshError('ERR_CONFLICT', `model '${destination}' exists`, { model: destination })
  try {
    await link(file.path, target)
  } catch (err) {
    if (codeOf(err) === 'EEXIST') {
      throw new MeshError('ERR_CONFLICT', `model '${destination}' exists`, { model: destination })
    }
    if (codeOf(err) !== 'EXDEV' && codeOf(err) !== 'EPERM' && codeOf(err) !== 'ENOTSUP') {
      throw MeshError.backendUnavailable(`cannot link ${target}: ${errorMessage(err)}`, err)
    }
    await copyFile(file.path, target, constants.COPYFILE_EXCL).catch((e: unknown) => {
      throw MeshError.backendUnavailable(`cannot copy to ${target}: ${errorMessage(e)}`, e)
    })
  }
}
