import test from 'brittle'
import { RELAY_FOR_MS, RelayChoice } from '../../../facilities/net/relays.js'

const A = Buffer.alloc(32, 1)
const B = Buffer.alloc(32, 2)

test('relays: a peer is dialed directly until a dial fails at hole-punching, then through a relay for a while', (t) => {
  const choice = new RelayChoice([A, B])
  t.is(choice.through('peer', 0), null, 'direct first')
  t.is(choice.failed('peer', 'PEER_NOT_FOUND', 0), false, 'a peer not found is no reason to relay')
  t.is(choice.failed('peer', undefined, 0), false)
  t.is(choice.through('peer', 0), null)
  t.is(choice.failed('peer', 'HOLEPUNCH_DOUBLE_RANDOMIZED_NATS', 0), true, 'a punch failure is')
  const first = choice.through('peer', 1)
  const second = choice.through('peer', 2)
  t.ok(first && second && !first.equals(second), 'relays taken in turn')
  t.is(choice.through('other', 2), null, 'other peers still direct')
  t.is(choice.through('peer', RELAY_FOR_MS), null, 'direct again once the while is over')
})

test('relays: with none configured, every dial is direct', (t) => {
  const choice = new RelayChoice([])
  t.is(choice.configured, false)
  t.is(choice.failed('peer', 'HOLEPUNCH_ABORTED', 0), false)
  t.is(choice.through('peer', 0), null)
})
