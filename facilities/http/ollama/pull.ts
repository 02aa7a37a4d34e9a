/**
 * Ollama's `POST /api/pull` over any source that can pull (`pullModel`): a
 * processor's backend on the standalone server, the mesh on a gateway (admins
 * only, onto the processors that can). Streams Ollama's progress frames as
 * NDJSON (`{status, digest?, total?, completed?}` … `{status: "success"}`), or
 * answers once with `{status: "success"}` when `stream` is false. An error
 * before the first frame gets its own status (404 for a model the registry
 * does not have); after it, it is the stream's last `{"error"}` line.
 *
 * Extension fields (not Ollama's): `source` (a GGUF's URL or `hf:` reference,
 * for llama.cpp), `digest` (`sha256:…`, checked before the model is served),
 * `to` (processor keys or prefixes, or "all"; a gateway's choice of targets).
 */
import { MeshError } from '../../../kernel/errors.js'
import type { PullCallbacks, PullProgress, PullRequest } from '../../backends/types.js'
import type { Exchange } from '../plumbing.js'
import { sendJson } from '../plumbing.js'
import { writeFrame } from '../stream-writer.js'
import { line, NDJSON } from './replies.js'
import { requireModel } from './requests.js'

/** Ollama's message for a model its registry does not have. */
const NO_SUCH_MODEL = 'pull model manifest: file does not exist'

/** Where a pull goes: one processor's processors or all of them (the gateway's extension). */
export type PullTargets = string[] | 'all'

/** A source that can pull: a pulling backend, or a gateway's mesh for an admin. */
export interface ModelPuller {
  pullModel(req: PullRequest & { to?: PullTargets; replicas?: number }, cb: PullCallbacks): Promise<unknown>
}

/** Names a model's source when a pull gives none: the standalone server's small registry. */
export type PullRegistry = (model: string) => string | undefined

function isPuller(source: unknown): source is ModelPuller {
  return typeof (source as Partial<ModelPuller> | null)?.pullModel === 'function'
}

function optionalString(body: Record<string, unknown>, field: string): string | undefined {
  const v = body[field]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'string' || v === '') throw MeshError.badRequest(`${field} must be a non-empty string`)
  return v
}

function targetsOf(body: Record<string, unknown>): PullTargets | undefined {
  const to = body.to
  if (to === undefined || to === null || to === 'all') return to ?? undefined
  if (!Array.isArray(to) || to.length === 0 || !to.every((k) => typeof k === 'string' && k !== '')) {
    throw MeshError.badRequest('to must be "all" or a non-empty array of processor keys')
  }
  return to as string[]
}

/** The pull asked for. @throws ERR_BAD_REQUEST, ERR_MODEL_NOT_FOUND (not in the registry) */
function pullRequestOf(body: Record<string, unknown>, registry: PullRegistry | undefined) {
  // `name` is the field's older spelling; Ollama still reads it.
  const model = requireModel(body, body.model === undefined && body.name !== undefined ? 'name' : 'model')
  if (body.stream !== undefined && typeof body.stream !== 'boolean')
    throw MeshError.badRequest('stream must be a boolean')
  let source = optionalString(body, 'source')
  if (source === undefined && registry) {
    source = registry(model)
    if (source === undefined) throw new MeshError('ERR_MODEL_NOT_FOUND', NO_SUCH_MODEL, { model })
  }
  const digest = optionalString(body, 'digest')
  const to = targetsOf(body)
  const req: PullRequest & { to?: PullTargets; replicas?: number } = { model }
  if (source !== undefined) req.source = source
  if (digest !== undefined) req.digest = digest
  if (to !== undefined) req.to = to
  // The gateway's extension: copies from the mesh until that many processors hold it (checked there).
  if (body.replicas !== undefined && body.replicas !== null) req.replicas = body.replicas as number
  return { req, stream: body.stream !== false }
}

/** The `/api/pull` handler; `registry` names sources for pulls that give none. */
export function pullHandler(registry?: PullRegistry): (x: Exchange) => Promise<void> {
  return async (ctx) => {
    const { req, stream } = pullRequestOf(await ctx.body(), registry)
    if (!isPuller(ctx.source))
      throw MeshError.unsupported('/api/pull', 'is not served here: nothing can pull')
    const { res, cancel } = ctx
    let last = ''
    const onProgress = (p: PullProgress) => {
      if (!stream || cancel.aborted) return
      last = p.status
      if (!res.headersSent) res.writeHead(200, NDJSON.headers)
      writeFrame(res, line(p))
    }
    try {
      await ctx.source.pullModel(req, { onProgress, cancel })
    } catch (err) {
      if (!res.headersSent) throw err
      writeFrame(res, NDJSON.failure(err))
      res.end()
      return
    }
    if (cancel.aborted) return
    if (!stream) sendJson(res, 200, { status: 'success' })
    else {
      if (!res.headersSent) res.writeHead(200, NDJSON.headers)
      res.end(last === 'success' ? undefined : line({ status: 'success' }))
    }
  }
}
