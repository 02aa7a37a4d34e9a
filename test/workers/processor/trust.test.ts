import RPC from '@hyperswarm/rpc'
import test, { type Test } from 'brittle'
import DHT, { type KeyPair } from 'hyperdht'
import type { Testnet } from 'hyperdht/testnet.js'
import { encodeJSON } from '../../../facilities/net/payload.js'
import { fromWireError } from '../../../facilities/net/wire-errors.js'
import { type ConfigInput, parseConfig, processorConfigSchema } from '../../../kernel/config.js'
import { deepMerge } from '../../../kernel/config-load.js'
import { MeshError } from '../../../kernel/errors.js'
import { ProcessorWorker } from '../../../workers/processor/processor.worker.js'
import { rejectsWith } from '../../helpers/assert.js'
import { type T, TEST_LOG, testnet, until } from '../../helpers/mesh.js'

async function startProcessor(t: T, bootstrap: string[], extra: ConfigInput, store?: string) {
  const config = parseConfig(
    processorConfigSchema,
    deepMerge(
      { bootstrap, store: store ?? (await t.tmp()), log: TEST_LOG, backend: { type: 'echo' } },
      extra,
    ),
  )
  const p = new ProcessorWorker(config)
  t.teardown(() => p.close(), { order: 1 })
  await p.ready()
  return p
}

/** A peer with `keyPair` calling the processor over its own connection. */
function caller(t: T, net: Testnet, keyPair: KeyPair, to: Buffer) {
  const rpc = new RPC({ dht: net.createNode(), keyPair })
  t.teardown(() => rpc.destroy(), { order: 0 })
  const client = rpc.connect(to, { keyPair })
  const closed = new Promise<void>((resolve) => client.once('close', () => resolve()))
  const request = async <R = unknown>(method: string, payload: unknown): Promise<R> => {
    try {
      return JSON.parse(
        (await client.request(method, encodeJSON(payload), { timeout: 5_000 })).toString(),
      ) as R
    } catch (err) {
      throw fromWireError(err, method)
    }
  }
  return { client, closed, request }
}

const hex = (k: KeyPair) => k.publicKey.toString('hex')

/** The call fails at the connection: the firewall refused the caller. */
async function refused(t: Test, p: Promise<unknown>, message: string): Promise<void> {
  const code = await p.then(
    () => 'answered',
    (err) => MeshError.from(err).code,
  )
  // Refused at the connection (the firewall at the handshake), or at the call (asked again there).
  t.ok(code === 'ERR_UNAVAILABLE' || code === 'ERR_FORBIDDEN', `${message} (${code})`)
}

test('processor trust: only a configured gateway vouches; vouched gateways are served but cannot vouch; a smaller set cuts them off at once', {
  timeout: 60_000,
}, async (t) => {
  const { net, bootstrap } = await testnet(t)
  const a = DHT.keyPair()
  const b = DHT.keyPair()
  const c = DHT.keyPair()
  const store = await t.tmp()
  const p = await startProcessor(t, bootstrap, { firewall: { trustedGateways: [hex(a)] } }, store)

  const strangerFirst = caller(t, net, b, p.publicKey)
  await refused(t, strangerFirst.request('status', null), 'B is refused before A vouches')

  const fromA = caller(t, net, a, p.publicKey)
  t.alike(await fromA.request('trust', { gateways: [hex(b)] }), { gateways: 1 }, 'A vouches for B')
  t.alike(p.vouchedGateways, [hex(b)])

  const fromB = caller(t, net, b, p.publicKey)
  const status = await fromB.request<{ role: string }>('status', null)
  t.is(status.role, 'processor', 'B is served now')
  await rejectsWith(
    t,
    fromB.request('trust', { gateways: [hex(c)] }),
    'ERR_FORBIDDEN',
    'B may not vouch in turn: trust does not chain',
  )
  const fromC = caller(t, net, c, p.publicKey)
  await refused(t, fromC.request('status', null), 'C is still refused')

  await rejectsWith(t, fromA.request('trust', { gateways: 'all' }), 'ERR_BAD_REQUEST', 'not a list')
  await rejectsWith(t, fromA.request('trust', { gateways: ['x'] }), 'ERR_BAD_REQUEST', 'not a key')
  t.alike(p.vouchedGateways, [hex(b)], 'a bad call changes nothing')

  // Replaced by a smaller set (a revoke): B's open connection is closed, a new one refused.
  t.alike(await fromA.request('trust', { gateways: [] }), { gateways: 0 })
  t.ok(await until(() => fromB.client.closed, 2_000), "B's connection was closed")
  await fromB.closed
  t.alike(p.vouchedGateways, [])
  const bAgain = caller(t, net, b, p.publicKey)
  await refused(t, bAgain.request('status', null), 'and B cannot come back')
  t.ok(await fromA.request('status', null), 'A is still served')
})

test('processor trust: vouched sets survive a restart; those of a gateway no longer configured do not count', async (t) => {
  const { net, bootstrap } = await testnet(t)
  const a = DHT.keyPair()
  const a2 = DHT.keyPair()
  const b = DHT.keyPair()
  const store = await t.tmp()
  const first = await startProcessor(
    t,
    bootstrap,
    { firewall: { trustedGateways: [hex(a), hex(a2)] } },
    store,
  )
  await caller(t, net, a, first.publicKey).request('trust', { gateways: [hex(b)] })
  await first.close()

  const second = await startProcessor(
    t,
    bootstrap,
    { firewall: { trustedGateways: [hex(a), hex(a2)] } },
    store,
  )
  t.alike(second.vouchedGateways, [hex(b)], 'kept in the store')
  t.is(
    (await caller(t, net, b, second.publicKey).request<{ role: string }>('status', null)).role,
    'processor',
    'B is served after the restart',
  )
  await second.close()

  const third = await startProcessor(t, bootstrap, { firewall: { trustedGateways: [hex(a2)] } }, store)
  t.alike(third.vouchedGateways, [], 'A is no longer trusted by configuration: its word is void')
  await refused(t, caller(t, net, b, third.publicKey).request('status', null), 'refused')
})
