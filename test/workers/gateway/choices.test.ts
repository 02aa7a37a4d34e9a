import test from 'brittle'
import type { RouterFacility } from '../../../facilities/router/router.facility.js'
import type { CancelToken } from '../../../kernel/cancel.js'
import { noop } from '../../../kernel/cancel.js'
import { gatewayConfigSchema, parseConfig } from '../../../kernel/config.js'
import { MeshError } from '../../../kernel/errors.js'
import { parseInferRequest } from '../../../kernel/inference.js'
import type { Spent } from '../../../workers/gateway/choices.js'
import { InferencePipeline, type Sink } from '../../../workers/gateway/inference-pipeline.js'
import {
  logger,
  routerOver,
  type StandIn,
  standIn,
  standInNet,
} from '../../facilities/router/stand-in-pool.js'
import { until } from '../../helpers/mesh.js'

const config = parseConfig(gatewayConfigSchema, {
  bootstrap: ['127.0.0.1:1'],
  routing: { retryBaseMs: 1, retryMaxMs: 5 },
})

async function pipelineOver(t: { teardown: (fn: () => unknown) => void }, pool: StandIn[]) {
  const router: RouterFacility = await routerOver(pool, { retryBaseMs: 1, retryMaxMs: 5 })
  t.teardown(() => router.close())
  const net = standInNet(pool)
  const pipeline = new InferencePipeline(
    config,
    () => router,
    () => net,
    () => logger,
  )
  return { router, pipeline }
}

const chat = (n: number, stream = false, timeoutMs?: number) =>
  parseInferRequest(
    { kind: 'chat', model: 'm', messages: [{ role: 'user', content: 'hi' }], stream, n, timeoutMs },
    config.maxPromptBytes,
  )

/** Text pieces as a sink gets them, with their choice's index. */
type Piece = [text: string, index: number | undefined]

function sink(pieces: Piece[] = [], watch: Sink['watch'] = () => noop): Sink {
  return { runningKey: null, onText: (text, index) => pieces.push([text, index]), watch }
}

const hex = (p: StandIn) => p.key.toString('hex')
const inflight = (router: RouterFacility) => router.list().reduce((n, p) => n + p.inflight, 0)
type Opts = Record<string, unknown>
const cancelOf = (opts: Opts) => opts.cancel as CancelToken
const chunk = (opts: Opts, text: string) => (opts.onChunk as (c: { text: string }) => void)({ text })

/** Answers with `text` and counts that tell the processor apart: prompt 2, completion `n`. */
const answering = (p: StandIn, n: number) => {
  p.answer = async () => ({ text: `from ${n}`, doneReason: 'stop', promptTokens: 2, completionTokens: n })
}

test('choices: n 3 over three processors: a leg on each, in index order, tokens summed', async (t) => {
  const pool = [standIn(1), standIn(2), standIn(3)]
  for (const [i, p] of pool.entries()) answering(p, i + 1)
  const { router, pipeline } = await pipelineOver(t, pool)
  const result = await pipeline.run(chat(3), sink(), '')
  const choices = result.choices ?? []
  t.alike(
    choices.map((c) => c.index),
    [0, 1, 2],
    'three choices in index order',
  )
  t.is(new Set(choices.map((c) => c.processor)).size, 3, 'each from another processor')
  t.alike(
    choices.map((c) => c.text),
    choices.map((c) => `from ${pool.findIndex((p) => hex(p) === c.processor) + 1}`),
    "each with its processor's text",
  )
  t.is(result.text, choices[0]?.text, "the answer's own text is the first choice's")
  t.is(result.processor, choices[0]?.processor, 'and its processor')
  t.is(result.promptTokens, 6, 'prompt tokens: each processor read the prompt')
  t.is(result.completionTokens, 6, 'completion tokens: 1 + 2 + 3')
  t.is(inflight(router), 0, 'every slot freed')
})

test('choices: n 3 with one processor of one slot: the three from it, one after another', async (t) => {
  const pool = [standIn(1)]
  answering(pool[0] as StandIn, 4)
  const { router, pipeline } = await pipelineOver(t, pool)
  const result = await pipeline.run(chat(3), sink(), '')
  t.alike(
    result.choices?.map((c) => [c.index, c.processor, c.completionTokens]),
    [0, 1, 2].map((i) => [i, hex(pool[0] as StandIn), 4]),
  )
  t.is(result.completionTokens, 12)
  t.is(inflight(router), 0)
})

test('choices: streamed, every piece carries its choice index', async (t) => {
  const pool = [standIn(1), standIn(2), standIn(3)]
  pool.forEach((p, i) => {
    p.answer = async (_m, _p, opts) => {
      chunk(opts, `a${i + 1} `)
      await new Promise((r) => setImmediate(r))
      chunk(opts, `b${i + 1}`)
      return { text: '', doneReason: 'stop', promptTokens: 1, completionTokens: 2 }
    }
  })
  const { pipeline } = await pipelineOver(t, pool)
  const pieces: Piece[] = []
  const result = await pipeline.run(chat(3, true), sink(pieces), '')
  t.is(pieces.length, 6, 'two pieces per choice')
  for (const c of result.choices ?? []) {
    const n = pool.findIndex((p) => hex(p) === c.processor) + 1
    const texts = pieces.filter(([, index]) => index === c.index).map(([text]) => text)
    t.alike(texts, [`a${n} `, `b${n}`], `choice ${c.index}: its processor's pieces, in order`)
  }
})

test('choices: one failing after its text fails the request; the others stop, their tokens spent', async (t) => {
  const pool = [standIn(1), standIn(2), standIn(3)]
  let started = 0
  let stopped = 0
  // Two generate until stopped, then answer what they made; the third breaks once they run.
  for (const p of pool.slice(0, 2)) {
    p.answer = (_m, _p, opts) => {
      started++
      chunk(opts, 'some ')
      return new Promise((resolve) => {
        cancelOf(opts).onAbort(() => {
          stopped++
          resolve({ text: '', doneReason: 'cancelled', promptTokens: 2, completionTokens: 5 })
        })
      })
    }
  }
  ;(pool[2] as StandIn).answer = async (_m, _p, opts) => {
    await until(() => started === 2, 2_000, 1)
    chunk(opts, 'partial')
    throw new MeshError('ERR_UNAVAILABLE', 'connection lost')
  }
  const { router, pipeline } = await pipelineOver(t, pool)
  const spent: Spent = { promptTokens: 0, completionTokens: 0 }
  await t.exception(pipeline.run(chat(3, true), sink(), '', spent), /ERR_STREAM_BROKEN/)
  t.is(stopped, 2, 'the other choices were stopped')
  t.alike(spent, { promptTokens: 4, completionTokens: 10 }, 'and what they generated is spent')
  t.is(inflight(router), 0, 'every slot freed')
})

test('choices: a cancel stops every leg; the choices that made text answer, marked cancelled', async (t) => {
  const pool = [standIn(1), standIn(2), standIn(3)]
  let running = 0
  pool.forEach((p, i) => {
    p.answer = (_m, _p, opts) => {
      running++
      // The third processor has made nothing yet when stopped.
      if (i < 2) chunk(opts, 'some ')
      return new Promise((resolve, reject) => {
        cancelOf(opts).onAbort(() => {
          if (i === 2) reject(MeshError.cancelled())
          else resolve({ text: '', doneReason: 'cancelled', promptTokens: 2, completionTokens: 3 })
        })
      })
    }
  })
  const { router, pipeline } = await pipelineOver(t, pool)
  let stop = noop
  const answer = pipeline.run(
    chat(3, true),
    sink([], (cancel) => {
      stop = () => cancel.abort()
      return noop
    }),
    '',
  )
  await until(() => running === 3, 2_000, 1)
  stop()
  const result = await answer
  const third = hex(pool[2] as StandIn)
  const choices = result.choices ?? []
  t.is(choices.length, 3, 'every choice listed')
  t.ok(
    choices.every((c) => c.doneReason === 'cancelled'),
    'each cancelled',
  )
  t.alike(
    choices.map((c) => c.completionTokens).sort(),
    [0, 3, 3],
    'with the tokens each made (none on the one that had not started)',
  )
  t.ok(
    choices.every((c) => c.processor !== third),
    'the one stopped before its text names no processor',
  )
  t.is(result.completionTokens, 6, 'the answer bills what ran')
  t.is(result.promptTokens, 4)
  t.is(result.doneReason, 'cancelled')
  t.is(inflight(router), 0, 'every slot freed')
})

test('choices: one failing before its text is retried elsewhere, like any request', async (t) => {
  const pool = [standIn(1), standIn(2), standIn(3)]
  for (const [i, p] of pool.entries()) answering(p, i + 1)
  let refused = 0
  ;(pool[0] as StandIn).answer = async () => {
    refused++
    throw new MeshError('ERR_UNAVAILABLE', 'restarting')
  }
  const { router, pipeline } = await pipelineOver(t, pool)
  const result = await pipeline.run(chat(3), sink(), '')
  t.is(result.choices?.length, 3, 'three choices')
  t.ok(
    result.choices?.every((c) => c.processor !== hex(pool[0] as StandIn)),
    'none from the processor that failed',
  )
  t.ok(refused >= 1, `it was tried (${refused} time(s))`)
  t.ok(pipeline.retries >= 1, 'and the leg retried')
  t.is(inflight(router), 0, 'every slot freed')
})

/** Streams a piece, then answers what it made when stopped: 2 prompt tokens, 7 completion ones. */
function generatesUntilStopped(p: StandIn, stops: unknown[]): void {
  p.answer = (_m, _p, opts) => {
    chunk(opts, 'some ')
    return new Promise((resolve) => {
      const cancel = cancelOf(opts)
      cancel.onAbort(() => {
        stops.push(cancel.reason)
        resolve({ text: '', doneReason: 'cancelled', promptTokens: 2, completionTokens: 7 })
      })
    })
  }
}

test('deadline: a stream stopped by it fails with ERR_TIMEOUT, billed what its processor generated', async (t) => {
  const pool = [standIn(1)]
  const stops: unknown[] = []
  generatesUntilStopped(pool[0] as StandIn, stops)
  const { router, pipeline } = await pipelineOver(t, pool)
  const spent: Spent = { promptTokens: 0, completionTokens: 0 }
  await t.exception(pipeline.run(chat(1, true, 50), sink(), '', spent), /ERR_TIMEOUT/)
  t.alike(
    stops,
    [undefined],
    'the processor was stopped as a caller stops a stream (it answers what it made)',
  )
  t.alike(spent, { promptTokens: 2, completionTokens: 7 }, 'and that is spent')
  t.is(inflight(router), 0, 'the slot freed')
})

test('deadline: n 3 with one choice done in time fails with ERR_TIMEOUT, billed all three', async (t) => {
  const pool = [standIn(1), standIn(2), standIn(3)]
  const stops: unknown[] = []
  answering(pool[0] as StandIn, 4)
  generatesUntilStopped(pool[1] as StandIn, stops)
  generatesUntilStopped(pool[2] as StandIn, stops)
  const { router, pipeline } = await pipelineOver(t, pool)
  const spent: Spent = { promptTokens: 0, completionTokens: 0 }
  await t.exception(pipeline.run(chat(3, true, 50), sink(), '', spent), /ERR_TIMEOUT/)
  t.is(stops.length, 2, 'the two running choices were stopped')
  t.alike(spent, { promptTokens: 6, completionTokens: 18 }, 'the done one and what the others made: spent')
  t.is(inflight(router), 0, 'every slot freed')
})

test('choices: with a seed, choice i is sent seed + i (distinct, reproducible per seed and index)', async (t) => {
  const pool = [standIn(1), standIn(2), standIn(3)]
  const seeds: unknown[] = []
  for (const p of pool)
    p.answer = async (_m, payload) => {
      const { options } = payload as { options: { seed?: number; temperature?: number } }
      seeds.push([options.seed, options.temperature])
      return { text: 'x', doneReason: 'stop', promptTokens: 1, completionTokens: 1 }
    }
  const { pipeline } = await pipelineOver(t, pool)
  const req = parseInferRequest(
    {
      kind: 'chat',
      model: 'm',
      messages: [{ role: 'user', content: 'hi' }],
      n: 3,
      options: { seed: 42, temperature: 0.5 },
    },
    config.maxPromptBytes,
  )
  await pipeline.run(req, sink(), '')
  t.alike(
    seeds.sort(),
    [
      [42, 0.5],
      [43, 0.5],
      [44, 0.5],
    ],
    'seed, seed + 1, seed + 2; the other options as asked',
  )
  t.alike(req.options, { seed: 42, temperature: 0.5 }, "the request's own options are left as they were")
})

test("choices: each choice has its leg's reasoning, calls and log probabilities when set, by the processor's rule", async (t) => {
  const pool = [standIn(1), standIn(2)]
  const call = { id: 'c1', name: 'look', arguments: {} }
  const logprobs = [{ token: 'x', logprob: -1 }]
  const parts = [
    { thinking: 'hmm', toolCalls: [call], logprobs },
    { thinking: '', toolCalls: [] },
  ]
  pool.forEach((p, i) => {
    p.answer = async () => ({
      text: 'x',
      doneReason: 'stop',
      promptTokens: 1,
      completionTokens: 1,
      ...parts[i],
    })
  })
  const { pipeline } = await pipelineOver(t, pool)
  const result = await pipeline.run(chat(2), sink(), '')
  const byProcessor = (n: number) => result.choices?.find((c) => c.processor === hex(pool[n] as StandIn))
  const first = byProcessor(0)
  t.alike(
    [first?.thinking, first?.toolCalls, first?.logprobs],
    [parts[0]?.thinking, [call], logprobs],
    'set: copied',
  )
  const second = byProcessor(1)
  t.ok(second && !('thinking' in second) && !('toolCalls' in second), 'empty reasoning and calls: left out')
})
