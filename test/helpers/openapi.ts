/**
 * Checks HTTP answers against docs/openapi.json: the response documented for a method, path
 * and status (the path's `x-llm-mesh-method-not-allowed` for a 405 of a method it lacks; the
 * document's `x-llm-mesh-unknown-paths` for a path no route knows), its content type, its
 * body through the document's schema (ajv, JSON Schema 2020-12, `$ref`s resolved against the
 * document's components), each frame of a stream (`x-llm-mesh-frame`: NDJSON lines, SSE
 * `data:` events, typed SSE events whose `event:` is the data's `type`), and its headers.
 */
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js'
import type { Test } from 'brittle'

export const OPENAPI_FILE = fileURLToPath(new URL('../../../docs/openapi.json', import.meta.url))

type Json = Record<string, unknown>
/** What `x-llm-mesh-frame.framing` names: how a streamed body splits into frames. */
export type Framing = 'ndjson' | 'sse' | 'sse-typed'

export const METHODS = ['get', 'head', 'post', 'put', 'delete', 'options', 'patch', 'trace'] as const
/** The base every document `$ref` is resolved against inside ajv. */
const BASE = 'https://llm-mesh.invalid/openapi.json'

export function loadDocument(): Json {
  return JSON.parse(readFileSync(OPENAPI_FILE, 'utf8')) as Json
}

const asRecord = (v: unknown): Json => (v !== null && typeof v === 'object' ? (v as Json) : {})

/** The value a local `$ref` (`#/a/b`) points at in `doc`; undefined when it points nowhere. */
export function resolvePointer(doc: unknown, ref: string): unknown {
  if (!ref.startsWith('#/')) return undefined
  let at: unknown = doc
  for (const raw of ref.slice(2).split('/')) {
    const key = decodeURIComponent(raw).replaceAll('~1', '/').replaceAll('~0', '~')
    if (at === null || typeof at !== 'object' || !Object.hasOwn(at, key)) return undefined
    at = (at as Json)[key]
  }
  return at
}

/** Every `$ref` in `doc` that resolves to nothing. */
export function unresolvedRefs(doc: unknown): string[] {
  const bad: string[] = []
  const walk = (v: unknown) => {
    if (Array.isArray(v)) v.forEach(walk)
    else if (v !== null && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        if (k === '$ref' && typeof x === 'string' && resolvePointer(doc, x) === undefined) bad.push(x)
        else walk(x)
      }
    }
  }
  walk(doc)
  return bad
}

/** The schema with its local `$ref`s made absolute, so ajv resolves them in the document. */
function absolute(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(absolute)
  if (v === null || typeof v !== 'object') return v
  const out: Json = {}
  for (const [k, x] of Object.entries(v)) {
    out[k] = k === '$ref' && typeof x === 'string' && x.startsWith('#/') ? `${BASE}${x}` : absolute(x)
  }
  return out
}

const DATE_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/i

/** One response documented for a request, found in the document. */
interface Documented {
  where: string
  response: Json
}

export class OpenAPIChecker {
  readonly doc: Json
  private readonly ajv: Ajv2020
  private readonly compiled = new Map<unknown, ValidateFunction>()
  private readonly templates: { template: string; pattern: RegExp }[]

  constructor(doc: Json = loadDocument()) {
    this.doc = doc
    this.ajv = new Ajv2020({ strict: false, allErrors: true })
    this.ajv.addFormat('date-time', (s: string) => DATE_TIME.test(s) && !Number.isNaN(Date.parse(s)))
    // The whole document under one id: `${BASE}#/components/schemas/X` finds X.
    this.ajv.addSchema({ $id: BASE, components: absolute(asRecord(doc.components)) })
    this.templates = Object.keys(asRecord(doc.paths)).map((template) => ({
      template,
      pattern: new RegExp(
        `^${template.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\{[^}/]+\}/g, '[^/]+')}$`,
      ),
    }))
  }

  /** The documented path template a concrete path (or a template) falls under; null when none. */
  templateOf(path: string): string | null {
    const paths = asRecord(this.doc.paths)
    if (Object.hasOwn(paths, path)) return path
    return this.templates.find((x) => x.pattern.test(path))?.template ?? null
  }

  /** Follows `$ref`s (components.responses and the like) to the object itself. */
  private deref(v: unknown): Json {
    let at = asRecord(v)
    for (let i = 0; typeof at.$ref === 'string' && i < 10; i++)
      at = asRecord(resolvePointer(this.doc, at.$ref))
    return at
  }

  /** The response documented for `method path → status`, or why there is none. */
  documented(method: string, path: string, status: number): Documented | string {
    const m = method.toLowerCase()
    const template = this.templateOf(path)
    let responses: Json
    let where: string
    if (template === null) {
      const rule = (this.doc['x-llm-mesh-unknown-paths'] as Json[] | undefined)?.find((r) =>
        path.startsWith(String(r.prefix)),
      )
      if (!rule) return `${path}: not documented, and no x-llm-mesh-unknown-paths rule`
      responses = asRecord(rule.responses)
      where = `unknown path under ${String(rule.prefix)}`
    } else {
      const item = asRecord(asRecord(this.doc.paths)[template])
      const op = item[m]
      where = `${m.toUpperCase()} ${template}`
      if (op === undefined) {
        if (status !== 405) return `${where}: no such operation (only a 405 is documented for it)`
        return {
          where: `${where} (x-llm-mesh-method-not-allowed)`,
          response: this.deref(item['x-llm-mesh-method-not-allowed']),
        }
      }
      responses = asRecord(asRecord(op).responses)
    }
    const found = responses[String(status)] ?? responses.default
    if (found === undefined) return `${where}: status ${status} not documented`
    return { where: `${where} → ${status}`, response: this.deref(found) }
  }

  private validator(schema: unknown): ValidateFunction {
    let v = this.compiled.get(schema)
    if (!v) {
      v = this.ajv.compile(absolute(schema) as Json)
      this.compiled.set(schema, v)
    }
    return v
  }

  /** Errors of `value` against `schema` (a document schema, `$ref`s and all), each prefixed with `where`. */
  validate(schema: unknown, value: unknown, where: string): string[] {
    const v = this.validator(schema)
    if (v(value)) return []
    return (v.errors ?? []).map(
      (e) => `${where}: ${e.instancePath || '(body)'} ${e.message ?? ''} ${JSON.stringify(e.params)}`,
    )
  }

  /**
   * Errors of one response against the document: `status` documented for `method` on `path`
   * (concrete, or a template), `contentType` among its media types, and `body` (the text, or
   * already parsed JSON) matching the schema, frame by frame for a stream. HEAD: no body.
   */
  checkResponse(
    method: string,
    path: string,
    status: number,
    contentType: string | null,
    body: unknown,
  ): string[] {
    const found = this.documented(method, path, status)
    if (typeof found === 'string') return [found]
    const { where, response } = found
    const content = response.content === undefined ? null : asRecord(response.content)
    const media = contentType?.split(';')[0]?.trim().toLowerCase() ?? ''
    const empty = body === undefined || body === ''
    if (content === null) return empty ? [] : [`${where}: no body is documented, but one came`]
    if (method.toUpperCase() === 'HEAD') return []
    const entry = content[media]
    if (entry === undefined) {
      return [`${where}: content type ${contentType} not documented (${Object.keys(content).join(', ')})`]
    }
    const { schema } = asRecord(entry)
    const framing = asRecord(asRecord(entry)['x-llm-mesh-frame']).framing as Framing | undefined
    if (framing) return this.checkFrames(framing, schema, String(body), where)
    let value = body
    if (typeof body === 'string' && media.endsWith('json')) {
      try {
        value = JSON.parse(body)
      } catch {
        return [`${where}: the body is not JSON: ${body.slice(0, 200)}`]
      }
    }
    return this.validate(schema, value, where)
  }

  /** Errors of a streamed body, split into its frames, each checked against `schema`. */
  checkFrames(framing: Framing, schema: unknown, text: string, where: string): string[] {
    const errors: string[] = []
    let frames: { event?: string; data: unknown }[]
    try {
      frames = framing === 'ndjson' ? ndjsonFrames(text) : sseFrames(text)
    } catch (err) {
      return [`${where}: a frame does not parse: ${(err as Error).message}`]
    }
    if (frames.length === 0) errors.push(`${where}: an empty stream`)
    for (const [i, f] of frames.entries()) {
      errors.push(...this.validate(schema, f.data, `${where} frame ${i}`))
      if (framing === 'sse-typed' && f.event !== asRecord(f.data).type) {
        errors.push(`${where} frame ${i}: event ${f.event} but data type ${String(asRecord(f.data).type)}`)
      }
    }
    return errors
  }

  /** The frame schema and framing of `method path`'s streamed 200 (the first streaming media type). */
  streamOf(method: string, path: string): { framing: Framing; schema: unknown; where: string } | null {
    const found = this.documented(method, path, 200)
    if (typeof found === 'string') return null
    for (const entry of Object.values(asRecord(found.response.content))) {
      const framing = asRecord(asRecord(entry)['x-llm-mesh-frame']).framing as Framing | undefined
      if (framing) return { framing, schema: asRecord(entry).schema, where: found.where }
    }
    return null
  }

  /** Errors of one frame (parsed JSON, or `[DONE]`) of `POST path`'s stream. */
  checkStreamFrame(path: string, frame: unknown, method = 'POST'): string[] {
    const stream = this.streamOf(method, path)
    if (!stream) return [`${method} ${path}: no streamed answer is documented`]
    return this.validate(stream.schema, frame, `${stream.where} frame`)
  }

  /** Errors of a JSON request body against `method path`'s documented `requestBody`. */
  checkRequest(method: string, path: string, body: unknown): string[] {
    const template = this.templateOf(path)
    const op =
      template === null ? undefined : asRecord(asRecord(this.doc.paths)[template])[method.toLowerCase()]
    const where = `${method.toUpperCase()} ${template ?? path} request`
    const content = asRecord(asRecord(asRecord(op).requestBody).content)
    const entry = content['application/json']
    if (entry === undefined) return [`${where}: no JSON body is documented`]
    return this.validate(asRecord(entry).schema, body, where)
  }

  /** Errors of a response's headers: every header the document requires is there and matches its schema. */
  checkHeaders(method: string, path: string, status: number, headers: Headers): string[] {
    const found = this.documented(method, path, status)
    if (typeof found === 'string') return [found]
    const errors: string[] = []
    for (const [name, raw] of Object.entries(asRecord(found.response.headers))) {
      const h = this.deref(raw)
      const value = headers.get(name)
      if (value === null) {
        if (h.required === true) errors.push(`${found.where}: header ${name} missing`)
        continue
      }
      errors.push(...this.validate(h.schema ?? {}, value, `${found.where} header ${name}`))
    }
    return errors
  }
}

/** The JSON object on each line of an NDJSON body. @throws SyntaxError */
export function ndjsonFrames(text: string): { data: unknown }[] {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => ({ data: JSON.parse(l) as unknown }))
}

/** Each event of an SSE body: its `event:` name and its `data:` as JSON (`[DONE]` as that string). @throws SyntaxError */
export function sseFrames(text: string): { event?: string; data: unknown }[] {
  const out: { event?: string; data: unknown }[] = []
  for (const block of text.split(/\r?\n\r?\n/)) {
    const lines = block.split(/\r?\n/).filter((l) => l !== '' && !l.startsWith(':'))
    if (lines.length === 0) continue
    const data = lines.filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, ''))
    const event = lines
      .find((l) => l.startsWith('event:'))
      ?.slice(6)
      .trim()
    if (data.length === 0) throw new SyntaxError(`an event without data: ${block}`)
    const joined = data.join('\n')
    out.push({
      ...(event !== undefined ? { event } : {}),
      data: joined === '[DONE]' ? joined : JSON.parse(joined),
    })
  }
  return out
}

let shared: OpenAPIChecker | null = null
/** One checker per test process (compiling the schemas is the slow part). */
export function openapi(): OpenAPIChecker {
  shared ??= new OpenAPIChecker()
  return shared
}

/**
 * Reads `res`'s body and asserts that the response (status, content type, headers, body or
 * each frame of its stream) is as docs/openapi.json documents `method path`; returns the body.
 */
export async function assertConforms(
  t: Test,
  method: string,
  path: string,
  res: Response,
  message = `${method} ${path} → ${res.status}`,
): Promise<string> {
  const body = await res.text()
  const checker = openapi()
  const errors = [
    ...checker.checkResponse(method, path, res.status, res.headers.get('content-type'), body),
    ...checker.checkHeaders(method, path, res.status, res.headers),
  ]
  t.alike(errors, [], `${message}: as documented`)
  return body
}
