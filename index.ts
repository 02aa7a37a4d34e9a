/**
 * llm-mesh as a library: join the swarm from a program with MeshClient, or
 * embed workers and facilities.
 */

export type { PublicKey, PublicUser, TokenPair } from './facilities/auth.facility.js'
export type { Backend, BackendKind } from './facilities/backends/types.js'
export type { LimitState } from './facilities/limits.facility.js'
export { roleTopic } from './facilities/net.facility.js'
export type { UsageCounter, UsageRecord, UsageRow } from './facilities/usage.facility.js'
export { BaseWorker } from './workers/base.worker.js'
export {
  type CreateKeyOptions,
  type GatewayStatus,
  MeshClient,
  type MeshClientOptions,
  MeshStream,
  type StreamPart,
  type UsageQuery,
  type UsageReport,
  type UserLimitOverrides,
  type WhoAmI,
} from './workers/client.worker.js'
export { GatewayWorker } from './workers/gateway.worker.js'
export { ERROR_CODES, type ErrorCode, MeshError } from './workers/lib/errors.js'
export type { InferResult } from './workers/lib/inference.js'
export * from './workers/lib/wire.js'
export { ProcessorWorker } from './workers/processor.worker.js'
