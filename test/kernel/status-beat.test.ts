import test from 'brittle'
import { StatusVersions, sinceOf } from '../../kernel/status-beat.js'

test('status-beat: the load alone to a caller whose version is current, all of it when the description changed', (t) => {
  const versions = new StatusVersions('abc')
  const full = {
    role: 'processor',
    models: ['m'],
    capacity: 2,
    active: 0,
    queued: 0,
    tokensPerSecond: 0,
    uptimeMs: 1,
  }
  const first = versions.reply(full, null)
  t.is(first.role, 'processor', 'no version held: the full status')
  t.is(first.v, 'abc.1')
  const beat = versions.reply({ ...full, active: 2, activeOthers: 1, uptimeMs: 9 }, { since: 'abc.1' })
  t.alike(
    beat,
    { v: 'abc.1', active: 2, queued: 0, tokensPerSecond: 0, activeOthers: 1 },
    'load changes: a beat',
  )
  const changed = versions.reply({ ...full, models: ['m', 'n'] }, { since: 'abc.1' })
  t.is(changed.v, 'abc.2', 'a new model: a new version')
  t.alike(changed.models, ['m', 'n'], 'and the full status')
  t.is(
    versions.reply(full, { since: 'other.1' }).role,
    'processor',
    'another instance’s version: the full status',
  )
  t.is(sinceOf({ since: 3 }), '', 'a malformed since is none')
})
