/**
 * Pulling a GGUF into the models folder from a URL or an `hf:` reference,
 * through node-llama-cpp's model downloader (ipull underneath). The file is
 * downloaded under a hidden partial name (`.NAME.SOURCEHASH.part`, not a
 * `.gguf`, so never listed), kept on cancel or failure so the next pull of the
 * same source resumes it, and renamed to `NAME.gguf` only once it parses as a
 * GGUF model and matches the expected digest, if one was given.
 */
import { createHash } from 'node:crypto'
import { rename, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { createModelDownloader } from 'node-llama-cpp'
import { signalOf } from '../../../kernel/cancel.js'
import { MeshError } from '../../../kernel/errors.js'
import { errorMessage, isRecord } from '../../../kernel/util.js'
import { claimModelFile } from '../../models/file-claims.js'
import type { PullCallbacks, PullProgress, PullRequest, PullResult } from '../types.js'
import { readFileFacts } from './gguf-facts.js'
import { modelFileName } from './model-folder.js'

const SOURCE_RE = /^(https?:\/\/\S+|hf:\S+)$/
/** A content digest as pulls and copies take it: `sha256:<hex>` or `<hex>`; group 1 is the hex. */
export const DIGEST_RE = /^(?:sha256:)?([0-9a-f]{64})$/
/** Progress frames at most this often while bytes flow (the last one always goes). */
const PROGRESS_INTERVAL_MS = 100

export interface CheckedPull {
  name: string
  source: string
  digest: string | null
}

/** @throws ERR_BAD_REQUEST naming what is wrong */
export function checkPullRequest(req: PullRequest): CheckedPull {
  if (!isRecord(req)) throw MeshError.badRequest('a pull needs { model, source }')
  let name: string
  try {
    name = modelFileName(req.model)
  } catch {
    throw MeshError.badRequest(`model must be a plain name (no path): ${JSON.stringify(req.model)}`)
  }
  const { source, digest } = req
  if (typeof source !== 'string' || !SOURCE_RE.test(source)) {
    throw MeshError.badRequest('source must be an http(s):// URL or an hf: reference', { source })
  }
  if (digest !== undefined && (typeof digest !== 'string' || !DIGEST_RE.test(digest))) {
    throw MeshError.badRequest('digest must be sha256:<64 hex digits>', { digest })
  }
  return { name, source, digest: digest === undefined ? null : (DIGEST_RE.exec(digest)?.[1] ?? null) }
}

/** The partial file of one model from one source: a new source starts afresh. */
export function partialName(name: string, source: string): string {
  const tag = createHash('sha256').update(source).digest('hex').slice(0, 12)
  return `.${name}.${tag}.part`
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    (s) => s.isFile(),
    () => false,
  )
}

/** Checks a downloaded file; deletes it when it is not the model asked for. */
async function verify(path: string, want: string | null): Promise<{ digest: string; size: number }> {
  let digest: string
  try {
    digest = (await readFileFacts(path)).digest
  } catch (err) {
    await rm(path, { force: true })
    throw MeshError.badRequest(`the downloaded file is not a GGUF model: ${errorMessage(err)}`)
  }
  if (want !== null && digest !== want) {
    await rm(path, { force: true })
    throw new MeshError('ERR_DIGEST_MISMATCH', `downloaded sha256:${digest}, expected sha256:${want}`, {
      expected: `sha256:${want}`,
      actual: `sha256:${digest}`,
    })
  }
  return { digest, size: (await stat(path)).size }
}

/** Throttles byte progress so a fast loopback download does not flood the stream. */
function progressReporter(status: string, digest: string | null, onProgress: PullCallbacks['onProgress']) {
  let last = 0
  return (total: number, completed: number): void => {
    const now = Date.now()
    // ipull reports 0 of 0 before it knows the size: nothing to show yet.
    if (!onProgress || total === 0 || (completed < total && now - last < PROGRESS_INTERVAL_MS)) return
    last = now
    const frame: PullProgress = { status, total, completed }
    if (digest) frame.digest = `sha256:${digest}`
    onProgress(frame)
  }
}

/**
 * Downloads `req.source` into `dir` as `req.model`.gguf, resuming an earlier
 * partial download of the same source.
 * @throws ERR_BAD_REQUEST (bad request, or not a GGUF), ERR_CONFLICT (a different
 * model already has the name), ERR_DIGEST_MISMATCH, ERR_CANCELLED,
 * ERR_BACKEND_UNAVAILABLE (download failed; the partial file is kept)
 */
export async function pullGguf(dir: string, req: PullRequest, cb: PullCallbacks = {}): Promise<PullResult> {
  const pull = checkPullRequest(req)
  const finalPath = join(dir, `${pull.name}.gguf`)
  // Two pulls of one name, or a pull and a copy from the mesh, would write one file at once.
  const release = claimModelFile(finalPath)
  try {
    return await pullInto(finalPath, dir, pull, cb)
  } finally {
    release()
  }
}

async function pullInto(
  finalPath: string,
  dir: string,
  pull: CheckedPull,
  cb: PullCallbacks,
): Promise<PullResult> {
  if (await exists(finalPath)) return alreadyThere(finalPath, pull, cb)
  const signal = signalOf(cb)
  if (signal?.aborted) throw MeshError.cancelled('pull cancelled')
  const report = progressReporter(`pulling ${pull.name}`, pull.digest, cb.onProgress)
  let downloader: Awaited<ReturnType<typeof createModelDownloader>>
  try {
    downloader = await createModelDownloader({
      modelUri: pull.source,
      dirPath: dir,
      fileName: partialName(pull.name, pull.source),
      skipExisting: true,
      deleteTempFileOnCancel: false,
      parallelDownloads: 1,
      onProgress: ({ totalSize, downloadedSize }) => report(totalSize, downloadedSize),
    })
  } catch (err) {
    throw MeshError.backendUnavailable(`cannot fetch ${pull.source}: ${errorMessage(err)}`, err)
  }
  const partPath = await download(downloader, pull.source, signal)
  report(downloader.totalSize, downloader.totalSize)
  cb.onProgress?.({ status: 'verifying sha256 digest' })
  const { digest, size } = await verify(partPath, pull.digest)
  await rename(partPath, finalPath)
  cb.onProgress?.({ status: 'success' })
  return { model: pull.name, digest: `sha256:${digest}`, size }
}

async function download(
  downloader: Awaited<ReturnType<typeof createModelDownloader>>,
  source: string,
  signal: AbortSignal | undefined,
): Promise<string> {
  const onAbort = () => void downloader.cancel({ deleteTempFile: false }).catch(() => {})
  signal?.addEventListener('abort', onAbort, { once: true })
  try {
    const path = await downloader.download(signal ? { signal } : {})
    if (signal?.aborted) throw MeshError.cancelled('pull cancelled')
    return path
  } catch (err) {
    if (signal?.aborted) throw MeshError.cancelled('pull cancelled')
    throw MeshError.backendUnavailable(`download of ${source} failed: ${errorMessage(err)}`, err)
  } finally {
    signal?.removeEventListener('abort', onAbort)
  }
}

/** A model of that name is there already: fine if it is the one asked for. */
async function alreadyThere(path: string, pull: CheckedPull, cb: PullCallbacks): Promise<PullResult> {
  const facts = await readFileFacts(path).catch((err: unknown) => {
    throw MeshError.backendUnavailable(`cannot read ${path}: ${errorMessage(err)}`, err)
  })
  if (pull.digest !== null && facts.digest !== pull.digest) {
    throw new MeshError('ERR_CONFLICT', `model '${pull.name}' exists with another digest`, {
      model: pull.name,
      digest: `sha256:${facts.digest}`,
    })
  }
  cb.onProgress?.({ status: 'success' })
  return { model: pull.name, digest: `sha256:${facts.digest}`, size: (await stat(path)).size }
}
