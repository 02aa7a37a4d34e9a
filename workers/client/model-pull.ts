/**
 * ModelPullRun: what `MeshClient.pullModel` returns. Iterate it for the processors'
 * progress (each frame tagged with its processor), `result` settles with one outcome
 * per processor, `abort()` stops the pull (on the processors too; a llama.cpp download
 * resumes on the next pull of the same source).
 */
import type { PeerConnection } from '../../facilities/net/peer-connection.js'
import type { StreamChunk } from '../../facilities/net/streaming.js'
import type { GatewayPullRequest, PullSummary, TaggedProgress } from '../gateway/model-pull.js'
import type { Credentials } from './credentials.js'
import { Feed } from './feed.js'
import type { GatewayLink } from './gateway-link.js'

export type { GatewayPullRequest, PullOutcome, PullSummary, TaggedProgress } from '../gateway/model-pull.js'

/** What `pullModel` takes: `to` defaults to 'all' (see workers/gateway/model-pull.ts). */
export type ModelPullRequest = Omit<GatewayPullRequest, 'to'> & { to?: GatewayPullRequest['to'] }

export class ModelPullRun extends Feed<TaggedProgress, PullSummary> {}

/** The client's wait for a pull's answer: as long as the gateway's for the processors'. */
export const PULL_TIMEOUT_MS = 24 * 60 * 60_000 + 60_000

/** A stream chunk's progress frame (chunks without one are not a pull's), passed to `onProgress`. */
export function pullProgress(onProgress: (p: TaggedProgress) => void): (chunk: StreamChunk) => void {
  return (chunk) => {
    const p = (chunk as StreamChunk & { progress?: TaggedProgress }).progress
    if (p && typeof p.status === 'string') onProgress(p)
  }
}

/** A pull through the gateway `link` answers, with the client's `credentials`. */
export function pullThrough(
  link: GatewayLink,
  credentials: Credentials,
  req: ModelPullRequest,
): ModelPullRun {
  return new ModelPullRun(async (cancel, onProgress) => {
    const stream = (gw: PeerConnection) =>
      credentials.send(gw, req, (body) =>
        gw.stream<PullSummary>('modelPull', body, {
          cancel,
          timeout: PULL_TIMEOUT_MS,
          onChunk: pullProgress(onProgress),
        }),
      )
    return (await link.run('modelPull', stream, { stopped: () => cancel.aborted })).value
  })
}
