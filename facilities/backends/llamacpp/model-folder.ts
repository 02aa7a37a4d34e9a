/**
 * The models folder: a model's name is its `.gguf` file's name. Read afresh on
 * each listing so new files show up without a restart; the facts of a file are
 * cached per file version (mtime + size).
 */
import { readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { MeshError } from '../../../kernel/errors.js'
import { errorMessage, isRecord } from '../../../kernel/util.js'
import type { ModelInfo } from '../../../kernel/wire.js'
import { checkModelName } from '../request-checks.js'
import { type FileFacts, type ModelFile, modelInfoOf, readFileFacts } from './gguf-facts.js'

const MODEL_EXT = '.gguf'
const LATEST_TAG = ':latest'

function isNotFound(err: unknown): boolean {
  return isRecord(err) && (err.code === 'ENOENT' || err.code === 'ENOTDIR')
}

/**
 * The file name (without `.gguf`) a model name refers to; `name:latest` is an
 * alias of `name`.
 * @throws ERR_BAD_REQUEST for a non-string, ERR_MODEL_NOT_FOUND for anything
 * path-like, which can never name a file of the one folder
 */
export function modelFileName(name: unknown): string {
  const requested = checkModelName(name)
  const base = requested.endsWith(LATEST_TAG) ? requested.slice(0, -LATEST_TAG.length) : requested
  if (base === '' || base.includes('/') || base.includes('\\') || base.startsWith('.')) {
    throw MeshError.modelNotFound(requested)
  }
  return base
}

export class ModelFolder {
  /** Keyed by path; the version key (mtime + size) says when the file changed. */
  private readonly facts = new Map<string, { version: string; facts: Promise<FileFacts> }>()

  constructor(readonly dir: string) {}

  /** The model files of the folder, by name. @throws ERR_BACKEND_UNAVAILABLE when the folder cannot be read */
  async scan(): Promise<ModelFile[]> {
    let names: string[]
    try {
      names = await readdir(this.dir)
    } catch (err) {
      if (isNotFound(err)) return []
      throw MeshError.backendUnavailable(`cannot read models folder ${this.dir}: ${errorMessage(err)}`, err)
    }
    const models = names
      .filter((n) => n.endsWith(MODEL_EXT))
      .map((n) => n.slice(0, -MODEL_EXT.length))
      .sort()
    const files = await Promise.all(models.map((name) => this.statModel(name)))
    return files.filter((f): f is ModelFile => f !== null)
  }

  /** Resolves a model name (or `name:latest`) to its file. @throws ERR_BAD_REQUEST, ERR_MODEL_NOT_FOUND */
  async find(name: unknown): Promise<ModelFile> {
    const file = await this.statModel(modelFileName(name))
    if (!file) throw MeshError.modelNotFound(String(name))
    return file
  }

  /** The facts of a file, read once per version. Rejects (plain Error) when it is not a GGUF model. */
  factsOf(file: ModelFile): Promise<FileFacts> {
    const version = `${file.mtimeMs}:${file.size}`
    const cached = this.facts.get(file.path)
    if (cached?.version === version) return cached.facts
    const facts = readFileFacts(file.path)
    this.facts.set(file.path, { version, facts })
    facts.catch(() => {
      // Do not pin a failure: the file may be mid-copy and fine on the next scan.
      if (this.facts.get(file.path)?.facts === facts) this.facts.delete(file.path)
    })
    return facts
  }

  async infoOf(file: ModelFile): Promise<ModelInfo> {
    return modelInfoOf(file, await this.factsOf(file))
  }

  private async statModel(name: string): Promise<ModelFile | null> {
    const path = join(this.dir, name + MODEL_EXT)
    try {
      const s = await stat(path)
      return s.isFile() ? { name, path, size: s.size, mtimeMs: s.mtimeMs } : null
    } catch (err) {
      if (isNotFound(err)) return null
      throw MeshError.backendUnavailable(`cannot read ${path}: ${errorMessage(err)}`, err)
    }
  }
}
