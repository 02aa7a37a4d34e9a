import { Agent, request } from 'node:http'
import test, { type Test } from 'brittle'
import { HttpFacility } from '../../../facilities/http/http.facility.js'
import { LogFacility } from '../../../facilities/log.facility.js'
import type { InferenceSource } from '../../../kernel/wire.js'
import { until } from '../../helpers/mesh.js'

const CAP = 3

interface Reply {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: string
}

function get(url: string, path: string, agent: Agent | false): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}${path}`, { agent }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => {
        body += d
      })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

/** The HTTP facility alone, capped at CAP connections; nothing behind it is reached here. */
async function server(t: Test): Promise<string> {
  const http = new HttpFacility({
    host: '127.0.0.1',
    port: 0,
    maxBodyBytes: 1024,
    maxConnections: CAP,
    logger: new LogFacility({ level: 'silent' }).logger,
    authenticate: () => null,
    // /api/version and refusals never reach the mesh.
    sourceFor: () => ({}) as InferenceSource,
  })
  t.teardown(() => http.close(), { order: 1 })
  await http.ready()
  return http.url
}

test('http: past maxConnections a new connection gets 503 ERR_BUSY and is closed; open ones keep working', {
  timeout: 60_000,
}, async (t) => {
  const url = await server(t)
  // CAP keep-alive connections, each admitted (it answered) and then left idle.
  const held = new Agent({ keepAlive: true, maxSockets: CAP })
  t.teardown(() => held.destroy(), { order: 0 })
  const first = await Promise.all(Array.from({ length: CAP }, () => get(url, '/api/version', held)))
  t.alike(
    first.map((r) => r.status),
    Array(CAP).fill(200),
    `${CAP} connections admitted`,
  )
  t.is(Object.values(held.freeSockets).flat().length, CAP, `${CAP} idle sockets held`)

  const refused = await get(url, '/api/version', false)
  t.is(refused.status, 503, 'one more: 503')
  t.is(refused.headers.connection, 'close', 'and the connection is closed')
  t.is(refused.headers['retry-after'], '1', 'with when to retry')
  t.ok(String(refused.headers['content-type']).startsWith('application/json'))
  const ollama = JSON.parse(refused.body) as { error: string }
  t.ok(ollama.error.includes('http.maxConnections'), `Ollama error format: ${refused.body}`)

  const refusedOpenAI = await get(url, '/v1/models', false)
  t.is(refusedOpenAI.status, 503)
  const openai = JSON.parse(refusedOpenAI.body) as { error: { code: string; type: string } }
  t.is(openai.error.code, 'err_busy', `OpenAI error format, with the code: ${refusedOpenAI.body}`)
  t.is(openai.error.type, 'server_error')

  const again = await get(url, '/api/version', held)
  t.is(again.status, 200, 'an open connection keeps working')

  // Close two of the held connections: new ones are admitted again.
  for (const socket of Object.values(held.freeSockets).flat().slice(0, 2)) socket?.destroy()
  let status = 0
  t.ok(
    await until(async () => {
      status = (await get(url, '/api/version', false)).status
      return status === 200
    }, 20_000),
    `a new connection is served once others closed (last status ${status})`,
  )
})
