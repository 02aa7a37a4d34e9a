// Minimal typings for the parts of hyperdht that llm-mesh uses.
declare module 'hyperdht' {
  import type { EventEmitter } from 'node:events'

  export interface KeyPair {
    publicKey: Buffer
    secretKey: Buffer
  }

  export interface HostPort {
    host: string
    port: number
  }

  export interface DHTOptions {
    bootstrap?: Array<HostPort | string>
    keyPair?: KeyPair
    host?: string
    port?: number
    firewalled?: boolean
    ephemeral?: boolean
  }

  export interface LookupPeer {
    publicKey: Buffer
    relayAddresses: HostPort[]
  }

  export interface LookupResult {
    from: HostPort
    to: HostPort
    peers: LookupPeer[]
  }

  export interface Query extends AsyncIterable<LookupResult> {
    finished(): Promise<void>
    destroy(): void
  }

  export interface DHTServer extends EventEmitter {
    readonly publicKey: Buffer
    listen(keyPair?: KeyPair): Promise<void>
    close(): Promise<void>
  }

  export interface NoiseStream extends EventEmitter {
    readonly remotePublicKey: Buffer
    readonly publicKey: Buffer
    readonly destroyed: boolean
    destroy(err?: Error): void
  }

  export default class DHT extends EventEmitter {
    constructor(opts?: DHTOptions)
    static keyPair(seed?: Buffer): KeyPair
    readonly defaultKeyPair: KeyPair
    readonly destroyed: boolean
    ready(): Promise<void>
    fullyBootstrapped(): Promise<void>
    address(): HostPort & { family: number }
    announce(topic: Buffer, keyPair: KeyPair, relayAddresses?: HostPort[]): Query
    unannounce(topic: Buffer, keyPair: KeyPair): Promise<void>
    lookup(topic: Buffer): Query
    destroy(opts?: { force?: boolean }): Promise<void>
    createServer(
      opts: { shareLocalAddress?: boolean },
      onconnection: (socket: NoiseStream) => void,
    ): DHTServer
    createRawStream(opts?: object): unknown
    connect(publicKey: Buffer, opts?: { keyPair?: KeyPair; relayThrough?: Buffer }): NoiseStream
  }
}

declare module 'hyperdht/testnet.js' {
  import type DHT from 'hyperdht'
  import type { HostPort } from 'hyperdht'

  export interface Testnet {
    nodes: DHT[]
    bootstrap: HostPort[]
    createNode(opts?: object): DHT
    destroy(): Promise<void>
  }

  export default function createTestnet(
    size?: number,
    opts?:
      | { host?: string; port?: number; teardown?: unknown }
      | ((fn: () => Promise<void>, opts?: object) => void),
  ): Promise<Testnet>
}
