import test from 'brittle'
import { CancelToken, isCancelled, signalOf } from '../../kernel/cancel.js'

test('cancel token: callbacks once, in order; removal; late callbacks run at once', (t) => {
  const token = new CancelToken()
  const seen: string[] = []
  token.onAbort(() => seen.push('a'))
  const off = token.onAbort(() => seen.push('b'))
  token.onAbort((reason) => seen.push(`c:${String(reason)}`))
  off()
  token.abort('why')
  token.abort('again')
  t.alike(seen, ['a', 'c:why'])
  t.ok(token.aborted)
  t.is(token.reason, 'why')
  token.onAbort(() => seen.push('late'))
  t.is(seen.at(-1), 'late')
})

test('cancel token: its AbortSignal is made on demand and follows the token', (t) => {
  const before = new CancelToken()
  const signal = before.signal
  t.is(before.signal, signal, 'one signal per token')
  t.absent(signal.aborted)
  before.abort('stop')
  t.ok(signal.aborted)
  t.is(signal.reason, 'stop')

  const after = new CancelToken()
  after.abort('done')
  t.ok(after.signal.aborted, 'a signal made after the abort is already aborted')
})

test('cancel: signalOf and isCancelled honour a signal, a token, or both', (t) => {
  t.is(signalOf({}), undefined)
  t.absent(isCancelled({}))

  const controller = new AbortController()
  t.is(signalOf({ signal: controller.signal }), controller.signal)

  const token = new CancelToken()
  const fromToken = signalOf({ cancel: token }) as AbortSignal
  t.absent(fromToken.aborted)
  token.abort()
  t.ok(fromToken.aborted)
  t.ok(isCancelled({ cancel: token }))

  // Both: either one stops the request.
  const c2 = new AbortController()
  const t2 = new CancelToken()
  const both = signalOf({ signal: c2.signal, cancel: t2 }) as AbortSignal
  t.absent(isCancelled({ signal: c2.signal, cancel: t2 }))
  t2.abort()
  t.ok(both.aborted, 'the token aborts the combined signal')
  t.ok(isCancelled({ signal: c2.signal, cancel: t2 }))
  const c3 = new AbortController()
  const both3 = signalOf({ signal: c3.signal, cancel: new CancelToken() }) as AbortSignal
  c3.abort()
  t.ok(both3.aborted, 'the signal aborts the combined signal')
  t.ok(isCancelled({ signal: c3.signal, cancel: new CancelToken() }))
})
