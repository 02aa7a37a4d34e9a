import test from 'brittle'
import DHT from 'hyperdht'
import createTestnet from 'hyperdht/testnet.js'
import { RELAY_FOR_MS, RELAY_LIMITS, RelayChoice, serveRelay } from '../../../facilities/net/relays.js'

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

test('relays: the relay server bounds what one peer can hold: sessions per peer', async (t) => {
  const net = await createTestnet(3, { teardown: t.teardown.bind(t), host: '127.0.0.1' })
  const node = (opts: object = {}) => {
    const dht = new DHT({ bootstrap: net.bootstrap, host: '127.0.0.1', firewalled: false, ...opts })
    t.teardown(() => dht.destroy(), { order: 0 })
    return dht
  }
  const relay = await serveRelay(node(), DHT.keyPair(), { ...RELAY_LIMITS, maxSessionsPerPeer: 1 })
  t.teardown(() => relay.close(), { order: -1 })
  const peer = DHT.keyPair()
  const client = node()
  const dial = () =>
    new Promise<'open' | 'closed'>((resolve) => {
      const s = client.connect(relay.publicKey, { keyPair: peer })
      s.on('error', () => {})
      s.once('open', () => {
        // The relay refuses by closing at once: wait a moment to see which.
        setTimeout(() => resolve(s.destroyed ? 'closed' : 'open'), 300)
      })
      s.once('close', () => resolve('closed'))
    })
  t.is(await dial(), 'open', 'a first session is kept')
  t.is(await dial(), 'closed', 'a second one from the same peer is closed')
  t.is(relay.sessions(), 1)
  const other = await new Promise<'open' | 'closed'>((resolve) => {
    const s = client.connect(relay.publicKey, { keyPair: DHT.keyPair() })
    s.on('error', () => {})
    s.once('open', () => setTimeout(() => resolve(s.destroyed ? 'closed' : 'open'), 300))
    s.once('close', () => resolve('closed'))
  })
  t.is(other, 'open', 'another peer still gets one')
})
