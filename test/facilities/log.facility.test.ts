import test from 'brittle'
import { LogFacility } from '../../facilities/log.facility.js'
import { LogCapture } from '../helpers/traced-mesh.js'

test('log: secrets in known fields are redacted, at the top and one level down; other fields kept', async (t) => {
  const out = new LogCapture()
  const log = new LogFacility({ level: 'debug', destination: out }).logger
  log.info({ password: 'pw-1', user: 'alice' }, 'top')
  log.warn({ body: { refreshToken: 'rt-2', apiKey: 'key-3', model: 'm' } }, 'nested')
  log.child({ reqId: 'r1' }).debug({ headers: { authorization: 'Bearer jwt-4' } }, 'headers')
  log.error({ req: { headers: { authorization: 'Bearer jwt-5' } } }, 'deeper headers')
  const lines = out.lines()
  t.is(lines.length, 4)
  t.is(lines[0]?.password, '[redacted]')
  t.is(lines[0]?.user, 'alice', 'other fields stay')
  t.alike(lines[1]?.body, { refreshToken: '[redacted]', apiKey: '[redacted]', model: 'm' })
  t.alike(lines[2]?.headers, { authorization: '[redacted]' })
  t.is(lines[2]?.reqId, 'r1')
  t.alike(lines[3]?.req, { headers: { authorization: '[redacted]' } })
  for (const secret of ['pw-1', 'rt-2', 'key-3', 'jwt-4', 'jwt-5'])
    t.absent(out.text.includes(secret), `${secret} is not written`)
})
