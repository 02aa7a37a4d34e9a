/**
 * llm-mesh as a library: join the swarm from a program with MeshClient, or
 * embed workers and facilities.
 */
export type { Backend, BackendKind } from './facilities/backends/types.js'
export { roleTopic } from './facilities/net.facility.js'
export { BaseWorker } from './workers/base.worker.js'
export {
  type GatewayStatus,
  MeshClient,
  type MeshClientOptions,
  MeshStream,
  type StreamPart,
} from './workers/client.worker.js'
export { GatewayWorker } from './workers/gateway.worker.js'
export { ERROR_CODES, type ErrorCode, MeshError } from './workers/lib/errors.js'
export type { InferResult } from './workers/lib/inference.js'
export * from './workers/lib/wire.js'
export { ProcessorWorker } from './workers/processor.worker.js'
