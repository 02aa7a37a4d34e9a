// Minimal typings for hyperblobs 2 and the parts of Hypercore 11 / Corestore 7 that the model blob store uses.
declare module 'hyperblobs' {
  import type { EventEmitter } from 'node:events'
  import type { Duplex, Readable, Writable } from 'node:stream'

  /** Where a blob lies in its core: blocks [blockOffset, blockOffset + blockLength), bytes likewise. */
  export interface BlobId {
    blockOffset: number
    blockLength: number
    byteOffset: number
    byteLength: number
  }

  /** A Hypercore session, as far as blobs and their replication need it. */
  export interface BlobCore extends EventEmitter {
    readonly key: Buffer | null
    readonly discoveryKey: Buffer | null
    readonly length: number
    readonly byteLength: number
    readonly writable: boolean
    readonly closed: boolean
    ready(): Promise<void>
    close(): Promise<void>
    has(start: number, end?: number): Promise<boolean>
    get(index: number, opts?: { wait?: boolean; timeout?: number }): Promise<Buffer | null>
    /** Drops the blocks from `start` to `end` (exclusive) from local storage. */
    clear(start: number, end?: number): Promise<unknown>
    /** Resolves once the core knows the peers it is going to find (see Corestore's findingPeers). */
    update(opts?: { wait?: boolean }): Promise<boolean>
  }

  /** A Corestore (or one of its namespaces). */
  export interface BlobCorestore {
    /** `active: false`: a session that keeps the core open without asking peers for it. */
    get(opts: ({ name: string } | { key: Buffer }) & { active?: boolean }): BlobCore
    namespace(name: string): BlobCorestore
    replicate(isInitiator: boolean | Duplex): Duplex
    ready(): Promise<void>
    close(): Promise<void>
  }

  export interface BlobReadOptions {
    start?: number
    end?: number
    length?: number
    wait?: boolean
    timeout?: number
    prefetch?: boolean
  }

  export default class Hyperblobs {
    constructor(core: BlobCore, opts?: { blockSize?: number })
    readonly core: BlobCore
    readonly blockSize: number
    readonly key: Buffer | null
    ready(): Promise<void>
    close(): Promise<void>
    put(blob: Buffer, opts?: { blockSize?: number }): Promise<BlobId>
    get(id: BlobId, opts?: BlobReadOptions): Promise<Buffer | null>
    /** Drops the blob's blocks from local storage (peers that hold them can still serve them). */
    clear(id: BlobId): Promise<unknown>
    createReadStream(id: BlobId, opts?: BlobReadOptions): Readable & AsyncIterable<Buffer>
    /** Emits 'close' once its blocks are appended; `id` is then final. */
    createWriteStream(opts?: { blockSize?: number }): Writable & { readonly id: BlobId }
  }
}
