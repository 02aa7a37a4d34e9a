/**
 * One mesh for the SDK acceptance tests: a gateway with HTTP and accounts, a llama.cpp processor
 * serving the tiny model, and an ollama-backend processor whose Ollama-protocol server (in this
 * process, over llama.cpp) records every body it receives. Every client gets `fetch`, which checks
 * each response against docs/openapi.json and keeps the errors.
 */
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { Ajv } from 'ajv'
import { LlamaCppBackend } from '../../facilities/backends/llamacpp/llamacpp.backend.js'
import { OllamaCompatServer } from '../../facilities/http/ollama-api.js'
import { TINY_MODEL_NAME, writeTinyModel } from '../../facilities/tiny-model/tiny-model.js'
import {
  apiKeyFor,
  spawnProcessor,
  spawnTinyProcessor,
  startGateway,
  type T,
  testnet,
  until,
} from '../helpers/mesh.js'
import { openapi } from '../helpers/openapi.js'

export type Json = Record<string, unknown>

export const LLAMA_MODEL = TINY_MODEL_NAME
export const OLLAMA_MODEL_PREFIX = `${TINY_MODEL_NAME}-step2`

export const CITIES = ['Paris', 'Rome', 'Oslo'] as const

/** The shared tool's parameters. */
export const PICK_CITY_PARAMS = {
  type: 'object',
  properties: {
    city: { type: 'string', enum: [...CITIES] },
    metric: { type: 'boolean' },
  },
  required: ['city', 'metric'],
  additionalProperties: false,
}
export const PICK_CITY_DESCRIPTION = 'Pick a city to report on'

/** The shared structured output. */
export const ANSWER_SCHEMA = {
  type: 'object',
  properties: {
    answer: { type: 'string', enum: ['yes', 'no'] },
    sure: { type: 'boolean' },
  },
  required: ['answer', 'sure'],
  additionalProperties: false,
}

const ajv = new Ajv({ strict: false })
const validPickCity = ajv.compile(PICK_CITY_PARAMS)
const validAnswer = ajv.compile(ANSWER_SCHEMA)

/** Ajv's errors of `value` against the tool's parameters ([] when valid). */
export function pickCityErrors(value: unknown): string[] {
  return validPickCity(value) ? [] : (validPickCity.errors ?? []).map((e) => `${e.instancePath} ${e.message}`)
}

/** Ajv's errors of `value` against the answer schema ([] when valid). */
export function answerErrors(value: unknown): string[] {
  return validAnswer(value) ? [] : (validAnswer.errors ?? []).map((e) => `${e.instancePath} ${e.message}`)
}

/** JSON.parse, or the text itself wrapped so that validation fails with it shown. */
export function parsed(text: unknown): unknown {
  try {
    return JSON.parse(String(text))
  } catch {
    return { unparsable: text }
  }
}

export interface SdkMesh {
  /** The gateway's HTTP base, without a trailing slash. */
  url: string
  apiKey: string
  /** The Ollama-backed model's name, as the mesh lists it. */
  ollamaModel: string
  /** Every body the Ollama-protocol server received, with its path, in order. */
  received: [string, Json][]
  /** The generation bodies (/api/chat, /api/generate) received since `mark()`. */
  generationsSince(mark: number): Json[]
  /** A fetch that checks each answer against docs/openapi.json (see `documentedErrors`). */
  fetch: typeof fetch
  /** Every deviation from the document seen so far (waits for the bodies still being read). */
  documentedErrors(): Promise<string[]>
  /** How many responses `fetch` saw. */
  checked(): number
}

/** A fetch that checks every response (status, content type, headers, body or frames) against the document. */
function checkingFetch() {
  const errors: string[] = []
  const pending: Promise<void>[] = []
  let count = 0
  const wrapped = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const req = new Request(input, init)
    const res = await fetch(input, init)
    const { pathname } = new URL(req.url)
    const copy = res.clone()
    count++
    pending.push(
      copy.text().then((body) => {
        const checker = openapi()
        const where = `${req.method} ${pathname} → ${res.status}`
        const found = [
          ...checker.checkResponse(req.method, pathname, res.status, res.headers.get('content-type'), body),
          ...checker.checkHeaders(req.method, pathname, res.status, res.headers),
        ]
        for (const e of found) errors.push(`${where}: ${e}`)
      }),
    )
    return res
  }
  return {
    fetch: wrapped as typeof fetch,
    async errors() {
      await Promise.all(pending)
      return errors
    },
    count: () => count,
  }
}

/** Starts the whole mesh, torn down with `t`. */
export async function sdkMesh(t: T): Promise<SdkMesh> {
  const { bootstrap } = await testnet(t)
  const modelsB = await t.tmp()
  await mkdir(modelsB, { recursive: true })
  await writeTinyModel(join(modelsB, `${OLLAMA_MODEL_PREFIX}.gguf`), { step: 2 })
  const engine = new LlamaCppBackend({ modelsDir: modelsB, threads: 1 })
  await engine.open()
  t.teardown(() => engine.close(), { order: 2 })
  const received: [string, Json][] = []
  const ollama = new OllamaCompatServer({
    source: engine,
    onRequest: (path, body) => received.push([path, structuredClone(body)]),
  })
  await ollama.listen()
  t.teardown(() => ollama.close(), { order: 1 })

  const gateway = await startGateway(t, bootstrap, { http: { enabled: true, port: 0 } })
  await Promise.all([
    spawnTinyProcessor(t, bootstrap),
    spawnProcessor(t, bootstrap, [
      '--store',
      await t.tmp(),
      '--backend',
      'ollama',
      '--ollama-host',
      ollama.url,
    ]),
  ])
  if (!(await until(() => gateway.router.size === 2, 20_000)))
    throw new Error('the gateway sees no two processors')
  const apiKey = await apiKeyFor(gateway)
  const url = String(gateway.httpUrl).replace(/\/$/, '')
  const res = await fetch(`${url}/api/tags`, { headers: { Authorization: `Bearer ${apiKey}` } })
  const tags = (await res.json()) as { models: { name: string }[] }
  const ollamaModel = tags.models.map((m) => m.name).find((n) => n.startsWith(OLLAMA_MODEL_PREFIX))
  if (!ollamaModel) throw new Error(`no Ollama-backed model in ${JSON.stringify(tags)}`)
  const checking = checkingFetch()
  return {
    url,
    apiKey,
    ollamaModel,
    received,
    generationsSince: (mark) =>
      received
        .slice(mark)
        .filter(([p]) => p === '/api/chat' || p === '/api/generate')
        .map(([, b]) => b),
    fetch: checking.fetch,
    documentedErrors: checking.errors,
    checked: checking.count,
  }
}
