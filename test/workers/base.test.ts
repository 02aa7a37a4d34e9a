import RPC from '@hyperswarm/rpc'
import test from 'brittle'
import { fromWireError } from '../../facilities/net/wire-errors.js'
import { StoreFacility } from '../../facilities/store.facility.js'
import { rejectsWith } from '../helpers/assert.js'
import { apiKeyFor, startClient, startGateway, testnet } from '../helpers/mesh.js'

test('worker: identity survives a restart on the same store', async (t) => {
  const { bootstrap } = await testnet(t)
  const store = await t.tmp()
  const first = await startGateway(t, bootstrap, { store })
  const key = first.publicKey.toString('hex')
  await first.close()
  const second = await startGateway(t, bootstrap, { store })
  t.is(second.publicKey.toString('hex'), key, 'same public key')
  const other = await startGateway(t, bootstrap)
  t.not(other.publicKey.toString('hex'), key, 'another store, another key')
})

test('worker: ping and status over RPC', async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap)
  const client = await startClient(t, bootstrap, {}, { apiKey: await apiKeyFor(gateway) })
  const peer = await client.connectGateway()
  t.is(
    peer.publicKey.toString('hex'),
    gateway.publicKey.toString('hex'),
    'client found the gateway on the DHT',
  )
  const pong = await peer.request<{ pong: boolean; role: string }>('ping', null)
  t.ok(pong.pong)
  t.is(pong.role, 'gateway')
  const status = await client.status()
  t.is(status.role, 'gateway')
  t.is(status.mesh, 'default')
  t.alike(status.processors, [])
  t.ok(typeof status.version === 'string' && status.version.length > 0)
})

test('worker: bad RPC payloads get coded errors and change nothing', async (t) => {
  const { net, bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, { maxPromptBytes: 1000 })
  const rpc = new RPC({ dht: net.createNode() })
  t.teardown(() => rpc.destroy(), { order: 0 })
  const pk = gateway.publicKey
  const key = await apiKeyFor(gateway)
  const raw = async (method: string, body: string) => {
    try {
      return await rpc.request(pk, method, Buffer.from(body), { timeout: 5000 })
    } catch (err) {
      throw fromWireError(err, method)
    }
  }
  await rejectsWith(t, raw('infer', '{not json'), 'ERR_BAD_REQUEST', 'invalid JSON')
  await rejectsWith(t, raw('nope', 'null'), 'ERR_UNKNOWN_METHOD', 'unknown method')
  const wrongType = await rejectsWith(
    t,
    raw('infer', JSON.stringify({ auth: key, kind: 'chat', model: 7, messages: [] })),
    'ERR_BAD_REQUEST',
  )
  t.ok(wrongType?.message.includes('request.model'), `names the field: ${wrongType?.message}`)
  await rejectsWith(
    t,
    raw('infer', JSON.stringify({ auth: key, kind: 'dance', model: 'm' })),
    'ERR_BAD_REQUEST',
    'unknown kind',
  )
  await rejectsWith(
    t,
    raw(
      'infer',
      JSON.stringify({ auth: key, kind: 'chat', model: 'm', messages: [{ role: 'wizard', content: 'x' }] }),
    ),
    'ERR_BAD_REQUEST',
    'bad role',
  )
  await rejectsWith(
    t,
    raw('infer', JSON.stringify({ auth: key, kind: 'generate', model: 'm', prompt: 'x'.repeat(2000) })),
    'ERR_PAYLOAD_TOO_LARGE',
    'oversized prompt',
  )
  await rejectsWith(
    t,
    raw('infer', JSON.stringify({ auth: key, kind: 'generate', model: 'm', prompt: 'x', stream: true })),
    'ERR_BAD_REQUEST',
    'stream without id',
  )
  await rejectsWith(t, raw('show', JSON.stringify({ auth: key })), 'ERR_BAD_REQUEST', 'show without model')
  await rejectsWith(
    t,
    raw('infer', JSON.stringify({ kind: 'generate', model: 'm', prompt: 'x' })),
    'ERR_AUTH_REQUIRED',
    'no credential',
  )
  await rejectsWith(
    t,
    raw('infer', JSON.stringify({ auth: 42, kind: 'generate', model: 'm', prompt: 'x' })),
    'ERR_AUTH_INVALID',
    'a credential of the wrong type',
  )
  await rejectsWith(t, raw('cancel', '42'), 'ERR_BAD_REQUEST', 'cancel without id')
  await rejectsWith(
    t,
    raw('infer', JSON.stringify({ auth: key, kind: 'generate', model: 'nobody-has-this', prompt: 'x' })),
    'ERR_MODEL_NOT_FOUND',
  )
  const pong = JSON.parse((await rpc.request(pk, 'ping', Buffer.from('null'), { timeout: 5000 })).toString())
  t.ok(pong.pong, 'gateway still answers')
})

test('store: one process per folder, with a clear error', async (t) => {
  const dir = await t.tmp()
  const a = new StoreFacility({ dir })
  await a.ready()
  t.teardown(() => a.close())
  const b = new StoreFacility({ dir })
  await rejectsWith(t, b.ready(), 'ERR_UNAVAILABLE')
  const bee = await a.bee('x')
  await bee.put('k', { v: 1 })
  t.alike((await bee.get('k'))?.value, { v: 1 })
})
