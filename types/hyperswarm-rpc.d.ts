// Minimal typings for @hyperswarm/rpc 3.x and the protomux-rpc channel it hands to handlers.
declare module '@hyperswarm/rpc' {
  import type { EventEmitter } from 'node:events'
  import type DHT from 'hyperdht'
  import type { KeyPair, NoiseStream } from 'hyperdht'

  export interface RequestOptions {
    timeout?: number
  }

  /** One protomux-rpc channel over one encrypted connection. */
  export interface RPCChannel extends EventEmitter {
    readonly closed: boolean
    readonly stream: NoiseStream
    request(method: string, value: Buffer, opts?: RequestOptions): Promise<Buffer>
    event(method: string, value: Buffer): void
    respond(method: string, handler: (value: Buffer) => unknown): void
    destroy(err?: Error): void
  }

  export interface Client extends EventEmitter {
    readonly closed: boolean
    readonly rpc: RPCChannel | null
    request(method: string, value: Buffer, opts?: RequestOptions): Promise<Buffer>
    event(method: string, value: Buffer): void
    destroy(err?: Error): void
  }

  export interface Server extends EventEmitter {
    readonly publicKey: Buffer
    readonly connections: Set<RPCChannel>
    listen(keyPair?: KeyPair): Promise<void>
    close(): Promise<void>
    respond(method: string, handler: (value: Buffer, rpc: RPCChannel) => unknown): this
  }

  export interface ServerOptions {
    /** Return true to reject the connection. */
    firewall?: (remotePublicKey: Buffer) => boolean
  }

  export default class RPC {
    constructor(opts?: { dht?: DHT; keyPair?: KeyPair; bootstrap?: unknown; poolLinger?: number })
    readonly dht: DHT
    createServer(opts?: ServerOptions): Server
    connect(publicKey: Buffer, opts?: { keyPair?: KeyPair; relayThrough?: Buffer }): Client
    request(publicKey: Buffer, method: string, value: Buffer, opts?: RequestOptions): Promise<Buffer>
    destroy(opts?: { force?: boolean }): Promise<void>
  }
}
