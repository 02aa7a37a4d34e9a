/**
 * llm-mesh as a library: join the swarm from a program with MeshClient, or
 * embed workers and facilities.
 */

export type { Backend, BackendKind } from './facilities/backends/types.js'
export { roleTopic } from './facilities/net/net.facility.js'
export type * from './kernel/accounts.js'
export { ERROR_CODES, type ErrorCode, MeshError } from './kernel/errors.js'
export type { InferResult } from './kernel/inference.js'
export * from './kernel/wire.js'
export { BaseWorker } from './workers/base.worker.js'
export {
  type CreateKeyOptions,
  type GatewayStatus,
  MeshClient,
  type MeshClientOptions,
  type UsageQuery,
  type UsageReport,
  type UserLimitOverrides,
  type WhoAmI,
} from './workers/client/client.worker.js'
export { MeshStream, type StreamPart } from './workers/client/mesh-stream.js'
export {
  type ModelPullRequest,
  ModelPullRun,
  type PullOutcome,
  type PullSummary,
  type TaggedProgress,
} from './workers/client/model-pull.js'
export { GatewayWorker } from './workers/gateway/gateway.worker.js'
export { ProcessorWorker } from './workers/processor/processor.worker.js'
