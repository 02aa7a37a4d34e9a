import { mkdir } from 'node:fs/promises'
import Corestore from 'corestore'
import Hyperbee from 'hyperbee'
import Rache from 'rache'
import { MeshError } from '../kernel/errors.js'
import { errorMessage } from '../kernel/util.js'
import { Facility } from './facility.js'

export interface StoreOptions {
  /** Folder of the worker's Corestore; one process per folder. */
  dir: string
  /** Entries of the one cache all the store's Hyperbees share (their keys and nodes by block); see DEFAULT_CACHE_ENTRIES. */
  cacheEntries?: number
}

/**
 * Hyperbee caches the keys and nodes it reads, by block. Without a cache
 * given to the Corestore each Hyperbee keeps one of 65,536 entries (keys and
 * nodes together), and a cached key is a slice of its block, so it pins the
 * whole block: the usage ledger's blocks (a user's records of a second) are up
 * to ~60 KB, and a gateway under steady load grew by ~1 KB of RSS per request
 * and kept growing.
 * One bounded cache for the whole store keeps that under ~60 MB; the
 * hot path (the top of each tree) fits in far fewer entries.
 */
export const DEFAULT_CACHE_ENTRIES = 1024

/** Corestore + a Hyperbee per named database, JSON values, UTF-8 keys. */
export class StoreFacility extends Facility {
  readonly name = 'store'
  readonly dir: string
  private readonly cacheEntries: number
  private corestore: Corestore | null = null
  private readonly bees = new Map<string, Hyperbee>()

  constructor(opts: StoreOptions) {
    super()
    const { dir, cacheEntries = DEFAULT_CACHE_ENTRIES } = opts
    if (!Number.isInteger(cacheEntries) || cacheEntries < 1)
      throw new MeshError('ERR_BAD_CONFIG', `cacheEntries must be a positive integer, got ${cacheEntries}`)
    this.dir = dir
    this.cacheEntries = cacheEntries
  }

  protected override async _open(): Promise<void> {
    await mkdir(this.dir, { recursive: true })
    const store = new Corestore(this.dir, { globalCache: new Rache({ maxSize: this.cacheEntries }) })
    try {
      await store.ready()
    } catch (err) {
      await store.close().catch(() => {})
      const msg = errorMessage(err)
      throw new MeshError(
        'ERR_UNAVAILABLE',
        /lock/i.test(msg)
          ? `store ${this.dir} is in use by another process`
          : `cannot open store ${this.dir}: ${msg}`,
        undefined,
        err,
      )
    }
    this.corestore = store
  }

  /** The Hyperbee called `name`, opened on first use. */
  async bee(name: string): Promise<Hyperbee> {
    const existing = this.bees.get(name)
    if (existing) return existing
    if (!this.corestore) throw new MeshError('ERR_UNAVAILABLE', 'store is not open')
    const bee = new Hyperbee(this.corestore.get({ name }), { keyEncoding: 'utf-8', valueEncoding: 'json' })
    this.bees.set(name, bee)
    await bee.ready()
    return bee
  }

  protected override async _close(): Promise<void> {
    for (const bee of this.bees.values()) await bee.close()
    this.bees.clear()
    await this.corestore?.close()
    this.corestore = null
  }
}
