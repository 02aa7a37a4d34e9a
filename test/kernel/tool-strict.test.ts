import test from 'brittle'
import { MeshError } from '../../kernel/errors.js'
import { parseInferRequest } from '../../kernel/inference.js'

const chatWith = (fn: Record<string, unknown>) => ({
  kind: 'chat',
  model: 'm',
  messages: [{ role: 'user', content: 'hi' }],
  tools: [{ type: 'function', function: { name: 'get_time', ...fn } }],
})

test('wire: a tool carries strict across the mesh; strict that is not a boolean is refused', (t) => {
  const req = parseInferRequest(chatWith({ strict: true }), 1 << 20)
  t.alike(
    req.kind === 'chat' && req.tools,
    [{ type: 'function', function: { name: 'get_time', strict: true } }],
    'strict kept, not stripped',
  )
  const without = parseInferRequest(chatWith({}), 1 << 20)
  t.alike(without.kind === 'chat' && without.tools, [{ type: 'function', function: { name: 'get_time' } }])
  try {
    parseInferRequest(chatWith({ strict: 'yes' }), 1 << 20)
    t.fail('a string strict was taken')
  } catch (err) {
    t.is(MeshError.from(err).code, 'ERR_BAD_REQUEST')
  }
})
