/**
 * A web app in a real browser (Debian's chromium, driven by playwright-core) calls the gateway
 * from another origin: from an origin in `http.corsOrigins` the call goes through (the browser's
 * preflight answered) and the page reads the answer and its `X-Request-Id`; from any other
 * origin the browser refuses to hand the page the answer. Everything on 127.0.0.1: the
 * browser's own network use is off and every host name but 127.0.0.1 resolves to nothing.
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import test from 'brittle'
import { chromium } from 'playwright-core'
import { apiKeyFor, spawnProcessor, startGateway, testnet, until } from '../helpers/mesh.js'
import { onPath } from '../helpers/prometheus.js'

const CHROMIUM = onPath('chromium')
const REQUIRED = process.env.LLM_MESH_REQUIRE_CHROMIUM === '1'

/** A page server standing for a web app's origin (`http://127.0.0.1:<port>`). */
async function appServer(t: { teardown(fn: () => unknown): void }): Promise<string> {
  const server: Server = createServer((_req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html' }).end('<!doctype html><title>app</title>')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

/** What the page's script got from `fetch` to the gateway. */
interface PageCall {
  ok: boolean
  status?: number
  requestId?: string | null
  content?: string
  error?: string
}

if (!CHROMIUM && !REQUIRED)
  console.log('# browser cors: skipped: chromium not on PATH (Debian: apt-get install chromium)')
if (!CHROMIUM && REQUIRED)
  test('browser cors (LLM_MESH_REQUIRE_CHROMIUM=1)', (t) => t.fail('chromium not on PATH'))

test('browser cors: a page on an allowed origin calls the gateway; another origin is refused', {
  timeout: 120_000,
  skip: !CHROMIUM,
}, async (t) => {
  const { bootstrap } = await testnet(t)
  const app = await appServer(t)
  const stranger = await appServer(t)
  const gateway = await startGateway(t, bootstrap, { http: { enabled: true, port: 0, corsOrigins: [app] } })
  await spawnProcessor(t, bootstrap, ['--store', await t.tmp(), '--backend', 'echo'])
  t.ok(await until(() => gateway.router.size === 1), 'the gateway sees the processor')
  const key = await apiKeyFor(gateway)

  const browser = await chromium.launch({
    executablePath: CHROMIUM as string,
    args: [
      '--no-sandbox',
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
    ],
  })
  t.teardown(() => browser.close())
  const call = async (origin: string): Promise<PageCall> => {
    const page = await browser.newPage()
    await page.goto(origin)
    return page.evaluate(
      async ({ url, key }) => {
        try {
          const res = await fetch(`${url}/v1/chat/completions`, {
            method: 'POST',
            headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
            body: JSON.stringify({
              model: 'echo',
              messages: [{ role: 'user', content: 'from the browser' }],
            }),
          })
          const body = (await res.json()) as { choices: { message: { content: string } }[] }
          return {
            ok: true,
            status: res.status,
            requestId: res.headers.get('X-Request-Id'),
            content: body.choices[0]?.message.content ?? '',
          }
        } catch (err) {
          return { ok: false, error: String(err) }
        }
      },
      { url: gateway.httpUrl as string, key },
    )
  }

  const allowed = await call(app)
  t.is(allowed.status, 200, `the allowed page's call is answered (${allowed.error ?? ''})`)
  t.is(allowed.content, 'from the browser', 'and the page reads the answer')
  t.ok(allowed.requestId && allowed.requestId.length > 0, 'and its X-Request-Id (exposed)')
  const refused = await call(stranger)
  t.is(refused.ok, false, 'a page on another origin does not get the answer')
  t.ok(refused.error?.includes('Failed to fetch'), `the browser refused it (${refused.error})`)
})
