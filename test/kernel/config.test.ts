import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import test from 'brittle'
import { gatewayConfigSchema, parseConfig, processorConfigSchema } from '../../kernel/config.js'
import { parseBootstrapList } from '../../kernel/config-bootstrap.js'
import { loadConfig, normalizeOllamaHost } from '../../kernel/config-load.js'
import { MeshError } from '../../kernel/errors.js'

function configError(fn: () => unknown): MeshError {
  try {
    fn()
  } catch (err) {
    return MeshError.from(err)
  }
  throw new Error('expected a config error')
}

test('config: a missing bootstrap is an error, never a silent public DHT', (t) => {
  const e = configError(() => parseConfig(gatewayConfigSchema, {}))
  t.is(e.code, 'ERR_BAD_CONFIG')
  t.ok(e.message.includes('config.bootstrap'), e.message)
  t.ok(e.message.includes('public'), 'says how to ask for the public DHT')
})

test('config: public only when named, host:port lists parsed', (t) => {
  t.is(parseConfig(gatewayConfigSchema, { bootstrap: 'public' }).bootstrap, 'public')
  t.alike(parseConfig(gatewayConfigSchema, { bootstrap: ['localhost:1234', '127.0.0.2:9'] }).bootstrap, [
    { host: '127.0.0.1', port: 1234 },
    { host: '127.0.0.2', port: 9 },
  ])
  t.alike(parseBootstrapList('a:1, b:2'), ['a:1', 'b:2'])
  t.is(parseBootstrapList('public'), 'public')
})

test('config: bad fields are named', (t) => {
  const cases: Array<[unknown, string]> = [
    [{ bootstrap: ['nohost'] }, 'config.bootstrap.0'],
    [{ bootstrap: ['a:99999'] }, 'config.bootstrap.0'],
    [{ bootstrap: 'public', net: { port: 70000 } }, 'config.net.port'],
    [{ bootstrap: 'public', log: { level: 'loud' } }, 'config.log.level'],
    [{ bootstrap: 'public', mesh: 'bad mesh!' }, 'config.mesh'],
    [{ bootstrap: 'public', registry: { heartbeatIntervalMs: -1 } }, 'config.registry.heartbeatIntervalMs'],
    [{ bootstrap: 'public', typo: 1 }, 'config'],
  ]
  for (const [input, field] of cases) {
    const e = configError(() => parseConfig(gatewayConfigSchema, input))
    t.is(e.code, 'ERR_BAD_CONFIG')
    t.ok(e.message.includes(field), `${field} named in: ${e.message}`)
  }
  const p = configError(() =>
    parseConfig(processorConfigSchema, { bootstrap: 'public', backend: { type: 'gpt' } }),
  )
  t.ok(p.message.includes('config.backend.type'), p.message)
})

test('config: file, then env, then overrides', async (t) => {
  const dir = await t.tmp()
  await writeFile(
    join(dir, 'processor.json'),
    JSON.stringify({ bootstrap: ['127.0.0.1:1'], mesh: 'file', backend: { threads: 3 } }),
  )
  const config = loadConfig(processorConfigSchema, 'processor', {
    configDir: dir,
    env: { LLM_MESH_MESH: 'env', OLLAMA_HOST: '127.0.0.1:5555', LLM_MESH_STORE: '/tmp/x' },
    overrides: { backend: { maxParallel: 4 } },
  })
  t.is(config.mesh, 'env')
  t.is(config.store, '/tmp/x')
  t.is(config.backend.threads, 3, 'file value kept')
  t.is(config.backend.maxParallel, 4, 'override applied')
  t.is(config.backend.ollamaHost, 'http://127.0.0.1:5555')
  t.is(normalizeOllamaHost('gpu-box'), 'http://gpu-box:11434')

  await writeFile(join(dir, 'gateway.json'), '{ not json')
  const e = configError(() => loadConfig(gatewayConfigSchema, 'gateway', { configDir: dir, env: {} }))
  t.is(e.code, 'ERR_BAD_CONFIG')
  t.ok(e.message.includes('gateway.json'))
})

test('config: the committed examples are valid', (t) => {
  const dir = new URL('../../../config/', import.meta.url).pathname
  const gw = loadConfig(gatewayConfigSchema, 'gateway', { file: join(dir, 'gateway.json.example'), env: {} })
  t.alike(gw.bootstrap, [{ host: '127.0.0.1', port: 49737 }])
  const pr = loadConfig(processorConfigSchema, 'processor', {
    file: join(dir, 'processor.json.example'),
    env: {},
  })
  t.is(pr.backend.type, 'auto')
})
