import test from 'brittle'
import type { TokenPair } from '../../kernel/accounts.js'
import { MeshClient } from '../../workers/client/client.worker.js'
import { rejectsWith } from '../helpers/assert.js'
import { apiKeyFor, passwordOf } from '../helpers/mesh.js'
import { LogCapture, tracedMesh } from '../helpers/traced-mesh.js'

const USER = 'carol'
const PASSWORD = 'carol-Secret-pw-31415'
const NEW_PASSWORD = 'carol-Newer-pw-27182'
const WRONG_PASSWORD = 'wrong-Guess-pw-16180'
const FORGED_KEY = `sk-${'f'.repeat(48)}`

const chat = { model: 'echo', messages: [{ role: 'user' as const, content: 'hello' }] }

test('no secret in any log line: passwords, API keys, JWTs, refresh tokens, invite tokens (debug level, every worker)', async (t) => {
  const { gateway, gatewayLog, processorLog, bootstrap } = await tracedMesh(t)
  const url = gateway.httpUrl as string
  const clientLog = new LogCapture()
  const client = (apiKey?: string) => {
    const c = new MeshClient({
      config: { bootstrap, log: { level: 'debug' } },
      logDestination: clientLog,
      ...(apiKey ? { apiKey } : {}),
    })
    t.teardown(() => c.close(), { order: 0 })
    return c
  }
  const secrets: Record<string, string> = {}

  // An admin (its password and key), who makes a user, a key for them and an invite over RPC.
  const adminKey = await apiKeyFor(gateway)
  secrets['admin password'] = passwordOf('admin')
  secrets['admin key'] = adminKey
  const admin = client(adminKey)
  await admin.createUser({ username: USER, password: PASSWORD })
  secrets.password = PASSWORD
  const key = (await admin.createKey({ name: 'k', user: USER })).key
  secrets['API key'] = key
  secrets['invite token'] = (await admin.createInvite({ note: 'for the test' })).token

  // The user logs in (JWT and refresh token), refreshes, fails a login, changes the password.
  const user = client()
  const pair = await user.call<TokenPair>('login', { username: USER, password: PASSWORD }, undefined, false)
  secrets.JWT = pair.accessToken
  secrets['refresh token'] = pair.refreshToken
  const again = await user.call<TokenPair>('refresh', { refreshToken: pair.refreshToken }, undefined, false)
  secrets['refreshed JWT'] = again.accessToken
  secrets['second refresh token'] = again.refreshToken
  await rejectsWith(
    t,
    user.call('login', { username: USER, password: WRONG_PASSWORD }, undefined, false),
    'ERR_AUTH_INVALID',
    'a failed login',
  )
  secrets['wrong password'] = WRONG_PASSWORD
  await user.login(USER, PASSWORD)
  t.is((await user.chat(chat)).text, 'hello', 'RPC with the JWT')
  await user.changePassword(PASSWORD, NEW_PASSWORD)
  secrets['new password'] = NEW_PASSWORD
  // A password change ends the sessions: a new login for HTTP.
  const fresh = await user.call<TokenPair>(
    'login',
    { username: USER, password: NEW_PASSWORD },
    undefined,
    false,
  )
  secrets['JWT after the change'] = fresh.accessToken
  secrets['refresh token after the change'] = fresh.refreshToken
  t.is((await client(key).chat(chat)).text, 'hello', 'RPC with the API key')

  // HTTP: the key, the JWT, a forged key; streamed and not.
  const post = (path: string, bearer: string, body: unknown) =>
    fetch(`${url}${path}`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${bearer}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    }).then(async (r) => ({ status: r.status, text: await r.text() }))
  t.is((await post('/api/chat', key, { ...chat, stream: false })).status, 200, 'HTTP with the API key')
  t.is(
    (await post('/v1/chat/completions', fresh.accessToken, { ...chat, stream: true })).status,
    200,
    'HTTP with the JWT',
  )
  t.is((await post('/api/chat', FORGED_KEY, chat)).status, 401, 'HTTP with a forged key: 401')
  secrets['forged key'] = FORGED_KEY
  t.is(
    (await post('/api/chat', pair.refreshToken, chat)).status,
    401,
    'HTTP with a refresh token as bearer: 401',
  )

  const logs = { gateway: gatewayLog.text, processor: processorLog.text, client: clientLog.text }
  t.ok(gatewayLog.lines().length > 10, `the gateway logged (${gatewayLog.lines().length} lines)`)
  t.ok(processorLog.lines().length > 0, `the processor logged (${processorLog.lines().length} lines)`)
  t.is(Object.keys(secrets).length, 14, 'every secret used is searched for')
  for (const [name, secret] of Object.entries(secrets)) {
    t.ok(secret.length >= 16, `${name} is long enough to search for`)
    for (const [who, text] of Object.entries(logs)) {
      t.absent(text.includes(secret), `the ${name} is in no ${who} log line`)
    }
  }
})
