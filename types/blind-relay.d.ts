// Minimal typings for the part of blind-relay that llm-mesh uses (the relay server).
declare module 'blind-relay' {
  import type { EventEmitter } from 'node:events'

  export class Server extends EventEmitter {
    constructor(opts: { createStream(opts: object): unknown })
    readonly sessions: Iterable<unknown>
    accept(stream: unknown, opts?: { id?: Buffer }): EventEmitter
    close(): Promise<void>
  }
}
