import { baseModel } from '../../kernel/inference.js'

/** A request waiting for a slot; the scheduler settles it. */
export interface Waiter<L> {
  model: string
  userId: string
  exclude: ReadonlySet<string>
  /** Processors to pass over while another is free (see `LeaseOptions.avoid`). */
  avoid: Set<string> | undefined
  resolve: (lease: L) => void
  reject: (err: unknown) => void
  unwatch: () => void
  /** When it started waiting (ms since the epoch), for placement's view of the queue. */
  since?: number
}

/** A model's waiting requests: how many, and since when the oldest waits. */
export interface ModelWaiting {
  count: number
  oldestSince: number
}

/** One user's requests for one model: slots held and requests waiting. */
interface UserLoad {
  running: number
  waiting: number
}

/** Who uses one model's slots (users with a request running or waiting), for their fair shares. */
interface ModelLoad {
  users: Map<string, UserLoad>
  /** Of `users`, those with a request waiting. */
  waitingUsers: number
}

/**
 * The requests waiting for a slot, one FIFO per user served in turn, so one busy user
 * cannot starve the others; and each user's share of a model's slots. While other users
 * wait for a model, a user who holds their share of its slots (the serving processors'
 * capacity ÷ the users running or waiting for it, rounded up) gets another only after
 * them. With nobody else waiting a user may hold every slot (no slot idles for fairness' sake).
 */
export class FairQueue<L> {
  /** Waiting requests, one FIFO per user; `userOrder` is whose turn comes next. */
  private readonly queues = new Map<string, Waiter<L>[]>()
  private userOrder: string[] = []
  private waitingCount = 0
  /** Per model (`baseModel`), each user's slots held and requests waiting. Kept while idle: few. */
  private readonly loads = new Map<string, ModelLoad>()
  /** The slots `model`'s users share. */
  private readonly slotsFor: (model: string) => number

  constructor(slotsFor: (model: string) => number) {
    this.slotsFor = slotsFor
  }

  /** Requests waiting. */
  get waiting(): number {
    return this.waitingCount
  }

  /** Requests `userId` has waiting. */
  waitingOf(userId: string): number {
    return this.queues.get(userId)?.length ?? 0
  }

  /** Requests waiting for `model` (`:latest` or not). */
  waitingFor(model: string): number {
    let n = 0
    for (const u of this.loads.get(baseModel(model))?.users.values() ?? []) n += u.waiting
    return n
  }

  /** Per model (base name) with requests waiting: how many, and the oldest one's start. */
  waitingByModel(): Map<string, ModelWaiting> {
    const out = new Map<string, ModelWaiting>()
    for (const queue of this.queues.values()) {
      for (const w of queue) {
        const key = baseModel(w.model)
        const since = w.since ?? Date.now()
        const seen = out.get(key)
        if (seen) {
          seen.count++
          seen.oldestSince = Math.min(seen.oldestSince, since)
        } else out.set(key, { count: 1, oldestSince: since })
      }
    }
    return out
  }

  /** `userId` holds one more slot for `model` (-1: one fewer). */
  hold(model: string, userId: string, delta: 1 | -1): void {
    this.count(model, userId, delta, 0)
  }

  /** Adds to `userId`'s count of slots held and requests waiting for `model` (negative: takes off). */
  private count(model: string, userId: string, running: number, waiting: number): void {
    const key = baseModel(model)
    let load = this.loads.get(key)
    if (!load) {
      load = { users: new Map(), waitingUsers: 0 }
      this.loads.set(key, load)
    }
    let mine = load.users.get(userId)
    if (!mine) {
      mine = { running: 0, waiting: 0 }
      load.users.set(userId, mine)
    }
    const wasWaiting = mine.waiting > 0
    mine.running += running
    mine.waiting += waiting
    if (wasWaiting !== mine.waiting > 0) load.waitingUsers += wasWaiting ? -1 : 1
    if (mine.running === 0 && mine.waiting === 0) load.users.delete(userId)
  }

  /**
   * Whether `userId` holds at least their share of `model`'s slots while another user waits
   * for it. Never while nobody else waits: a user alone may hold every slot.
   */
  overShare(userId: string, model: string): boolean {
    if (this.waitingCount === 0) return false
    const load = this.loads.get(baseModel(model))
    const mine = load?.users.get(userId)
    if (!load || !mine || mine.running === 0) return false
    if (load.waitingUsers - (mine.waiting > 0 ? 1 : 0) === 0) return false
    return mine.running >= Math.ceil(this.slotsFor(model) / load.users.size)
  }

  /** Queues `w` behind its user's other waiting requests. */
  push(w: Waiter<L>): void {
    const queue = this.queues.get(w.userId)
    if (queue) queue.push(w)
    else {
      this.queues.set(w.userId, [w])
      this.userOrder.push(w.userId)
    }
    this.waitingCount++
    this.count(w.model, w.userId, 0, 1)
  }

  /** Takes `w` out of the queue; false when it was not there (already settled). */
  remove(w: Waiter<L>): boolean {
    const queue = this.queues.get(w.userId)
    const at = queue ? queue.indexOf(w) : -1
    if (!queue || at === -1) return false
    queue.splice(at, 1)
    this.waitingCount--
    this.count(w.model, w.userId, 0, -1)
    if (queue.length === 0) {
      this.queues.delete(w.userId)
      this.userOrder = this.userOrder.filter((u) => u !== w.userId)
    }
    return true
  }

  /**
   * Hands free slots to waiting requests, users in turn. `take` gives the head of a user's
   * queue a lease, or null when none is free for it, or throws when none ever will be (the
   * waiter fails with that). Users below their share of a model others wait for go first;
   * then, so that no slot idles while a waiter could use it, anyone.
   */
  pump(take: (w: Waiter<L>) => L | null): void {
    let progress = true
    while (progress && this.waitingCount > 0)
      progress = this.pumpOnce(take, true) || this.pumpOnce(take, false)
  }

  /** One turn of every waiting user (with `fair`: those below their share only); whether any moved. */
  private pumpOnce(take: (w: Waiter<L>) => L | null, fair: boolean): boolean {
    let progress = false
    for (let i = 0; i < this.userOrder.length && this.waitingCount > 0; i++) {
      const userId = this.userOrder[i] as string
      const head = this.queues.get(userId)?.[0]
      if (!head || (fair && this.overShare(userId, head.model))) continue
      let lease: L | null
      try {
        lease = take(head)
      } catch (err) {
        this.remove(head)
        this.settle(head, err)
        progress = true
        continue
      }
      if (!lease) continue
      this.remove(head)
      head.unwatch()
      head.resolve(lease)
      progress = true
      // This user just had a turn: to the back of the line (if they still wait). Either way
      // the next user now stands at position i.
      const at = this.userOrder.indexOf(userId)
      if (at !== -1) {
        this.userOrder.splice(at, 1)
        this.userOrder.push(userId)
      }
      i--
    }
    return progress
  }

  settle(w: Waiter<L>, err: unknown): void {
    w.unwatch()
    w.reject(err)
  }

  /** Fails every waiting request with `err` and forgets every load. */
  clear(err: unknown): void {
    for (const queue of this.queues.values()) for (const w of queue) this.settle(w, err)
    this.queues.clear()
    this.userOrder = []
    this.waitingCount = 0
    this.loads.clear()
  }
}
