import test from 'brittle'
import { Registry } from 'prom-client'
import { GatewayMetrics } from '../../../facilities/metrics/gateway-metrics.js'
import { ModelLabels, OTHER_MODEL } from '../../../facilities/metrics/labels.js'
import { parseProm, sample } from '../../helpers/prom.js'

test('metrics: a model the mesh does not serve is labelled other', (t) => {
  const labels = new ModelLabels((m) => m === 'served')
  t.is(labels.of('served'), 'served')
  t.is(labels.of('served:latest'), 'served', 'one label for a model and its :latest')
  t.is(labels.of('made-up'), OTHER_MODEL)
  t.is(labels.of('user-42 secret text'), OTHER_MODEL, 'free text never becomes a label')
})

test('metrics: model labels stop at the cap; later models are other', (t) => {
  const labels = new ModelLabels(() => true, 2)
  t.is(labels.of('a'), 'a')
  t.is(labels.of('b'), 'b')
  t.is(labels.of('c'), OTHER_MODEL, 'the third distinct model')
  t.is(labels.of('a'), 'a', 'one seen before keeps its label')
})

test('metrics: tokens of an unknown model count under model="other"; codes are bounded', async (t) => {
  const register = new Registry()
  const metrics = new GatewayMetrics(register, {
    processorStates: () => ['serving', 'serving', 'unreachable'],
    isKnownModel: (m) => m === 'echo',
  })
  metrics.tokens('echo', 3, 5)
  metrics.tokens('nope', 7, 11)
  metrics.request('rpc', 'ok', 0.01)
  metrics.request('rpc', 'NOT_A_CODE', 0.01)
  const s = parseProm(await register.metrics())
  t.is(sample(s, 'llm_mesh_gateway_tokens_total', { kind: 'prompt', model: 'echo' }), 3)
  t.is(sample(s, 'llm_mesh_gateway_tokens_total', { kind: 'completion', model: 'echo' }), 5)
  t.is(sample(s, 'llm_mesh_gateway_tokens_total', { kind: 'prompt', model: 'other' }), 7)
  t.is(sample(s, 'llm_mesh_gateway_tokens_total', { kind: 'completion', model: 'other' }), 11)
  t.absent(
    [...s.keys()].some((k) => k.includes('nope')),
    'the unknown name appears nowhere',
  )
  t.is(sample(s, 'llm_mesh_gateway_requests_total', { api: 'rpc', code: 'ok' }), 1)
  t.is(sample(s, 'llm_mesh_gateway_requests_total', { api: 'rpc', code: 'ERR_INTERNAL' }), 1)
  t.is(sample(s, 'llm_mesh_gateway_processors', { state: 'serving' }), 2)
  t.is(sample(s, 'llm_mesh_gateway_processors', { state: 'draining' }), 0)
  t.is(sample(s, 'llm_mesh_gateway_processors', { state: 'unreachable' }), 1)
})
