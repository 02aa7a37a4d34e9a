import type { IncomingMessage } from 'node:http'
import test from 'brittle'
import { pathOf } from '../../../facilities/http/plumbing.js'

/** What the WHATWG URL parser makes of a request target: the reference pathOf must agree with. */
function reference(url: string): string | null {
  try {
    return new URL(url, 'http://localhost').pathname
  } catch {
    return null
  }
}

test('pathOf: the plain-path shortcut agrees with the URL parser', (t) => {
  const urls = [
    '/',
    '/api/tags',
    '/api/tags?',
    '/api/tags?x=1&y=/z',
    '/v1/models/abc-1_2',
    '/v1/models/llama3:latest',
    '/v1/models/a.b',
    '/v1/models/a%2Fb',
    '/v1/models/%zz',
    '/a/../b',
    '/a/./b',
    '//api/tags',
    '/api//tags',
    '/x#y',
    '/x\\y',
    '/ünï',
    '/a b',
  ]
  for (const url of urls) {
    t.is(pathOf({ url } as IncomingMessage), reference(url), url)
  }
})
