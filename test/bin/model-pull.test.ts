/**
 * `llm-mesh model pull`'s pieces (bin/lib/model-pull.ts): the flags to a request, and the
 * rendering of a pull as --json lines, plain lines or bars, with its exit code.
 */
import { PassThrough } from 'node:stream'
import test from 'brittle'
import { pullRequestFromArgs, renderPull } from '../../bin/lib/model-pull.js'
import type { PullSummary, TaggedProgress } from '../../workers/client/model-pull.js'
import { thrown } from '../helpers/assert.js'

const A = 'a'.repeat(64)
const B = 'b'.repeat(64)

async function* framesOf(frames: TaggedProgress[]) {
  for (const f of frames) yield f
}

const FRAMES: TaggedProgress[] = [
  { processor: A, status: 'pulling m', total: 100, completed: 40 },
  { processor: A, status: 'pulling m', total: 100, completed: 100 },
  { processor: B, status: 'pulling m', total: 100, completed: 10 },
  { processor: A, status: 'success' },
]
const SUMMARY: PullSummary = {
  model: 'm',
  results: [
    { processor: A, ok: true, model: 'm', digest: 'sha256:00', size: 100 },
    { processor: B, ok: false, error: { code: 'ERR_DIGEST_MISMATCH', message: 'differs' } },
  ],
}

test('model pull CLI: flags to a request', (t) => {
  const { req, json } = pullRequestFromArgs([
    'm',
    '--from',
    'http://h/m.gguf',
    '--to',
    A,
    '--to',
    B,
    '--json',
  ])
  t.alike(req, { model: 'm', to: [A, B], source: 'http://h/m.gguf' })
  t.ok(json)
  t.alike(pullRequestFromArgs(['m', '--digest', 'sha256:ab']).req, {
    model: 'm',
    to: 'all',
    digest: 'sha256:ab',
  })
  t.is(thrown(() => pullRequestFromArgs([]))?.code, 'ERR_BAD_REQUEST', 'no name')
  t.is(
    thrown(() => pullRequestFromArgs(['m', '--all', '--to', A]))?.code,
    'ERR_BAD_REQUEST',
    '--to and --all',
  )
  t.is(thrown(() => pullRequestFromArgs(['m', '--nope']))?.code, 'ERR_BAD_REQUEST', 'unknown flag')
  t.alike(pullRequestFromArgs(['m', '--replicas', '3']).req, { model: 'm', replicas: 3 }, '--replicas: no to')
  t.is(
    thrown(() => pullRequestFromArgs(['m', '--replicas', '257']))?.code,
    'ERR_BAD_REQUEST',
    'past the gateway limit of 256',
  )
  for (const extra of [['--to', A], ['--all'], ['--from', 'http://h/m.gguf'], []]) {
    const n = extra.length ? '2' : '0'
    t.is(
      thrown(() => pullRequestFromArgs(['m', '--replicas', n, ...extra]))?.code,
      'ERR_BAD_REQUEST',
      `--replicas ${n} ${extra.join(' ')}`,
    )
  }
})

test('model pull CLI: a copy from the mesh says from whom and how many bytes crossed the wire', async (t) => {
  let out = ''
  const copied: PullSummary = {
    model: 'm',
    results: [{ processor: B, ok: true, model: 'm', digest: 'sha256:00', size: 100, from: A, wireBytes: 60 }],
    note: 'only 1 processor(s) could take a copy: 2 of 3',
  }
  const code = await renderPull(framesOf([]), Promise.resolve(copied), {
    out: (s) => (out += s),
    tty: null,
    json: false,
  })
  t.is(code, 0)
  t.ok(out.includes(`copied m sha256:00 (100 bytes) from ${A.slice(0, 12)}, 60 bytes over the wire`), out)
  t.ok(out.includes('only 1 processor(s) could take a copy'), 'the note')
})

test('model pull CLI: --json lines, plain lines, bars; exit 1 when a processor failed', async (t) => {
  let out = ''
  const code = await renderPull(framesOf(FRAMES), Promise.resolve(SUMMARY), {
    out: (s) => (out += s),
    tty: null,
    json: true,
  })
  t.is(code, 1, 'one processor failed')
  const lines = out
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l))
  t.alike(lines.slice(0, 4), FRAMES, 'every frame, as it came')
  t.alike(lines[4], { done: SUMMARY })

  out = ''
  await renderPull(framesOf(FRAMES), Promise.resolve(SUMMARY), {
    out: (s) => (out += s),
    tty: null,
    json: false,
  })
  t.is(out.split('\n').filter((l) => l.includes('pulling m')).length, 2, 'a plain line per status change')
  t.ok(out.includes('pulled m sha256:00 (100 bytes)') && out.includes('failed: ERR_DIGEST_MISMATCH differs'))

  const tty = new PassThrough()
  let drawn = ''
  tty.on('data', (d) => (drawn += String(d)))
  out = ''
  const ok = await renderPull(
    framesOf(FRAMES),
    Promise.resolve({ model: 'm', results: [SUMMARY.results[0] as PullSummary['results'][0]] }),
    { out: (s) => (out += s), tty, json: false },
  )
  t.is(ok, 0, 'all pulled')
  t.ok(drawn.includes(A.slice(0, 12)), 'a bar per processor, drawn on the terminal stream')
  t.ok(out.includes('pulled m'), 'the outcome on stdout')

  await t.exception(
    renderPull(framesOf([]), Promise.reject(new Error('ERR_FORBIDDEN: admins only')), {
      out: () => {},
      tty: null,
      json: true,
    }),
    /ERR_FORBIDDEN/,
  )
})
