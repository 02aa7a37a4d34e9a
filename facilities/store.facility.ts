import { mkdir } from 'node:fs/promises'
import Corestore from 'corestore'
import Hyperbee from 'hyperbee'
import { MeshError } from '../workers/lib/errors.js'
import { Facility } from './facility.js'

export interface StoreOptions {
  /** Folder of the worker's Corestore; one process per folder. */
  dir: string
}

/** Corestore + a Hyperbee per named database, JSON values, UTF-8 keys. */
export class StoreFacility extends Facility {
  readonly name = 'store'
  readonly dir: string
  private corestore: Corestore | null = null
  private readonly bees = new Map<string, Hyperbee>()

  constructor(opts: StoreOptions) {
    super()
    const { dir } = opts
    this.dir = dir
  }

  protected override async _open(): Promise<void> {
    await mkdir(this.dir, { recursive: true })
    const store = new Corestore(this.dir)
    try {
      await store.ready()
    } catch (err) {
      await store.close().catch(() => {})
      const msg = err instanceof Error ? err.message : String(err)
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
