/**
 * CORS: a web app on an allowed origin may call the gateway's APIs with a key (preflight
 * answered without one), an origin not allowed gets no CORS headers, and a gateway without
 * `http.corsOrigins` sends none at all.
 */
import test from 'brittle'
import { chat } from '../../helpers/http.js'
import { apiKeyFor, spawnProcessor, startGateway, testnet, until } from '../../helpers/mesh.js'

const APP = 'https://app.example.com'
const OTHER = 'https://evil.example.net'

function preflight(url: string, origin: string): Promise<Response> {
  return fetch(`${url}/v1/chat/completions`, {
    method: 'OPTIONS',
    headers: {
      Origin: origin,
      'Access-Control-Request-Method': 'POST',
      'Access-Control-Request-Headers': 'authorization, content-type',
    },
  })
}

function post(url: string, origin: string, key: string): Promise<Response> {
  return fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { Origin: origin, Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(chat()),
  })
}

test('cors: allowed origins get preflights and readable answers; others get nothing', async (t) => {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, { http: { enabled: true, port: 0, corsOrigins: [APP] } })
  const closed = await startGateway(t, bootstrap, { http: { enabled: true, port: 0 } })
  await spawnProcessor(t, bootstrap, ['--store', await t.tmp(), '--backend', 'echo'])
  t.ok(
    await until(() => gateway.router.size === 1 && closed.router.size === 1),
    'both gateways see the processor',
  )
  const url = gateway.httpUrl as string
  const key = await apiKeyFor(gateway)

  const ok = await preflight(url, APP)
  t.is(ok.status, 204, 'preflight from the app: 204, no key needed')
  t.is(ok.headers.get('access-control-allow-origin'), APP)
  t.ok(ok.headers.get('access-control-allow-methods')?.includes('POST'), 'POST allowed')
  t.ok(ok.headers.get('access-control-allow-headers')?.includes('Authorization'), 'Authorization allowed')
  t.is(ok.headers.get('access-control-max-age'), '600')
  const refused = await preflight(url, OTHER)
  t.is(refused.status, 403, 'preflight from another origin: 403')
  t.is(refused.headers.get('access-control-allow-origin'), null, 'and no CORS header')

  const answer = await post(url, APP, key)
  t.is(answer.status, 200, 'the call itself')
  t.is(answer.headers.get('access-control-allow-origin'), APP, 'its answer is readable by the app')
  t.ok(answer.headers.get('access-control-expose-headers')?.includes('X-Request-Id'), 'X-Request-Id exposed')
  t.is(answer.headers.get('vary'), 'Origin')
  await answer.text()
  const denied = await post(url, APP, 'not-a-key')
  t.is(denied.status, 401, 'a bad key from the app')
  t.is(denied.headers.get('access-control-allow-origin'), APP, 'its error is readable too')
  await denied.text()
  const other = await post(url, OTHER, key)
  t.is(
    other.headers.get('access-control-allow-origin'),
    null,
    'another origin: no CORS header (the browser refuses)',
  )
  await other.text()

  const none = await preflight(closed.httpUrl as string, APP)
  t.is(none.headers.get('access-control-allow-origin'), null, 'no corsOrigins: no CORS header on a preflight')
  await none.text()
})

test('cors: a bad origin in the config is refused by name', async (t) => {
  const { bootstrap } = await testnet(t)
  await t.exception(
    () => startGateway(t, bootstrap, { http: { enabled: true, port: 0, corsOrigins: ['app.example.com/'] } }),
    /corsOrigins/,
  )
})
