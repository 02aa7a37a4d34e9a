import { setTimeout as sleep } from 'node:timers/promises'
import type { AuthConfig } from '../../kernel/config.js'
import { MeshError } from '../../kernel/errors.js'
import { setNewest } from './bounded-map.js'
import { FailureLog } from './failure-log.js'

/** Doublings of the account backoff that can matter (2^16 × any sane base is past any sane cap). */
const MAX_BACKOFF_STEPS = 16

/** The key of an account as tried from one source (names never hold a newline). */
const pairOf = (username: string, source: string) => `${username}\n${source}`

type LoginLimits = Pick<
  AuthConfig,
  'maxFailuresPerAccount' | 'maxFailuresPerPeer' | 'lockMs' | 'accountBackoffMs' | 'maxAccountBackoffMs'
>

/**
 * The brute-force limits of password checks (docs/auth.md): a source past its
 * failures, for every account or for one, is refused unchecked; an account past
 * its failures from all sources has its checks spaced out, except for a source
 * that signed in to it before (trusted).
 */
export class LoginGuard {
  /** Failures per account from every source: past the allowance, the account's checks are spaced. */
  private readonly accountFailures: FailureLog
  /** Failures per account from one source: past the allowance, that source is refused for that account. */
  private readonly pairFailures: FailureLog
  /** Failures per source across accounts: past the allowance, the source is refused for every account. */
  private readonly peerFailures: FailureLog
  /** Per account under backoff: when its next check may start (ms). */
  private readonly accountTurns = new Map<string, number>()
  /** Account and source pairs that signed in, until when: they skip the account's backoff. */
  private readonly trustedPairs = new Map<string, number>()

  constructor(private readonly limits: LoginLimits) {
    const { maxFailuresPerAccount, maxFailuresPerPeer, lockMs } = limits
    this.accountFailures = new FailureLog(
      maxFailuresPerAccount,
      lockMs,
      maxFailuresPerAccount + MAX_BACKOFF_STEPS,
    )
    this.pairFailures = new FailureLog(maxFailuresPerAccount, lockMs)
    this.peerFailures = new FailureLog(maxFailuresPerPeer, lockMs)
  }

  /** Whether `source` signed in to `username` recently. */
  trusted(username: string, source: string): boolean {
    return (this.trustedPairs.get(pairOf(username, source)) ?? 0) > Date.now()
  }

  /** `source` signed in to `username`: it skips the account's backoff for `ttlMs`. */
  trust(username: string, source: string, ttlMs: number): void {
    setNewest(this.trustedPairs, pairOf(username, source), Date.now() + ttlMs)
  }

  /**
   * Runs `check` (a password check of `username` as tried from `sources`)
   * under the limits, counting its outcome: false is a failure, a throw
   * (ERR_BUSY) is none.
   * @throws ERR_RATE_LIMITED, and whatever `check` throws
   */
  async attempt(
    username: string,
    sources: string[],
    trusted: boolean,
    check: () => Promise<boolean>,
  ): Promise<boolean> {
    const now = Date.now()
    for (const source of sources) {
      const wait = this.peerFailures.blockedFor(source, now)
      if (wait > 0) throw tooManyFailures('this peer', wait, 'peer')
    }
    for (const source of sources) {
      const wait = this.pairFailures.blockedFor(pairOf(username, source), now)
      if (wait > 0) throw tooManyFailures(`account '${username}' from this peer`, wait, 'account-peer')
    }
    const turn = trusted ? 0 : this.takeAccountTurn(username, now)
    // Counted before the (slow) check, in the same step as the tests above.
    this.accountFailures.begin(username)
    for (const source of sources) {
      this.peerFailures.begin(source)
      this.pairFailures.begin(pairOf(username, source))
    }
    let outcome: 'right' | 'wrong' | 'unchecked' = 'unchecked'
    try {
      if (turn > 0) await sleep(turn)
      const right = await check()
      outcome = right ? 'right' : 'wrong'
      return right
    } finally {
      this.done(username, sources, outcome)
    }
  }

  private done(username: string, sources: string[], outcome: 'right' | 'wrong' | 'unchecked'): void {
    const failed = outcome === 'wrong'
    this.accountFailures.done(username, failed)
    for (const source of sources) {
      this.peerFailures.done(source, failed)
      this.pairFailures.done(pairOf(username, source), failed)
      if (outcome === 'right') this.pairFailures.clear(pairOf(username, source))
    }
  }

  /**
   * Ms a check of `username` must wait for its turn, reserving it. None while
   * the account has fewer than `maxFailuresPerAccount` failures (and attempts
   * in flight) from all sources; past that, checks are spaced `accountBackoffMs`
   * apart, doubling with each further failure up to `maxAccountBackoffMs`, and a
   * turn further away than that is refused. Fresh sources (free to make) thus
   * get a few guesses per spacing, while the owner waits at most the spacing.
   * @throws ERR_RATE_LIMITED
   */
  private takeAccountTurn(username: string, now: number): number {
    const { maxFailuresPerAccount, accountBackoffMs, maxAccountBackoffMs } = this.limits
    const excess = this.accountFailures.count(username, now) - maxFailuresPerAccount
    if (excess < 0) return 0
    const spacing = Math.min(accountBackoffMs * 2 ** Math.min(excess, MAX_BACKOFF_STEPS), maxAccountBackoffMs)
    const turn = Math.max(now, this.accountTurns.get(username) ?? 0)
    if (turn - now > maxAccountBackoffMs)
      throw tooManyFailures(`account '${username}'`, turn - now, 'account')
    setNewest(this.accountTurns, username, turn + spacing)
    return turn - now
  }

  /** Forgets failures past the window, turns past and trust expired. */
  sweep(now = Date.now()): void {
    this.accountFailures.sweep(now)
    this.pairFailures.sweep(now)
    this.peerFailures.sweep(now)
    for (const [name, at] of this.accountTurns) if (at <= now) this.accountTurns.delete(name)
    for (const [pair, until] of this.trustedPairs) if (until <= now) this.trustedPairs.delete(pair)
  }
}

/** `scope` (in the error's details, and the audit log): what is locked — the peer, the account from it, or the account. */
function tooManyFailures(who: string, waitMs: number, scope: 'peer' | 'account-peer' | 'account'): MeshError {
  return new MeshError(
    'ERR_RATE_LIMITED',
    `too many failed logins for ${who}; retry in ${Math.ceil(waitMs / 1000)} s`,
    {
      limit: 'login',
      scope,
      retryAfterMs: Math.ceil(waitMs),
    },
  )
}
