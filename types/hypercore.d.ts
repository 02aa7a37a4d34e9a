// Minimal typings for corestore, hyperbee, hypercore-crypto, ready-resource and rache.
declare module 'corestore' {
  export interface Core {
    /** The cache the Corestore was given (`globalCache`), which its Hyperbees share; null without one. */
    readonly globalCache: import('rache').default | null
    readonly key: Buffer | null
    ready(): Promise<void>
    close(): Promise<void>
  }
  export default class Corestore {
    constructor(storage: string, opts?: object)
    ready(): Promise<void>
    get(opts: { name: string }): Core
    close(): Promise<void>
  }
}

declare module 'hyperbee' {
  import type { Core } from 'corestore'

  export interface Entry<T> {
    seq: number
    key: string
    value: T
  }

  export interface RangeOptions {
    gt?: string
    gte?: string
    lt?: string
    lte?: string
    limit?: number
    reverse?: boolean
  }

  export interface Batch {
    put(key: string, value: unknown): Promise<void>
    get<T = unknown>(key: string): Promise<Entry<T> | null>
    del(key: string): Promise<void>
    lock(): Promise<void>
    flush(): Promise<void>
    close(): Promise<void>
  }

  export default class Hyperbee {
    constructor(core: Core, opts?: { keyEncoding?: string; valueEncoding?: string })
    readonly core: Core
    ready(): Promise<void>
    close(): Promise<void>
    get<T = unknown>(key: string): Promise<Entry<T> | null>
    put(key: string, value: unknown): Promise<void>
    del(key: string): Promise<void>
    batch(): Batch
    createReadStream<T = unknown>(range?: RangeOptions): AsyncIterable<Entry<T>>
  }
}

declare module 'hypercore-crypto' {
  const crypto: {
    randomBytes(n: number): Buffer
    hash(data: Buffer | Buffer[]): Buffer
    discoveryKey(publicKey: Buffer): Buffer
  }
  export default crypto
}

declare module 'ready-resource' {
  import { EventEmitter } from 'node:events'
  export default class ReadyResource extends EventEmitter {
    opening: Promise<void> | null
    closing: Promise<void> | null
    opened: boolean
    closed: boolean
    ready(): Promise<void>
    close(): Promise<void>
    protected _open(): Promise<void>
    protected _close(): Promise<void>
  }
}

declare module 'rache' {
  /** Hyperbee's and Hypercore's cache: a map that drops a random entry past maxSize. */
  export default class Rache<K = unknown, V = unknown> {
    constructor(opts?: { maxSize?: number })
    readonly maxSize: number
    /** Entries in this cache and every cache that shares its bound. */
    readonly globalSize: number
    get(key: K): V | undefined
    set(key: K, value: V): void
  }
}
