/**
 * A caller's JSON Schema in the dialect node-llama-cpp turns into a grammar (GbnfJsonSchema).
 * That dialect is narrower, and node-llama-cpp reads what it does not know as "null" or
 * ignores it, so a schema is never passed through as is: each keyword is translated, kept
 * when it is only an annotation, or refused. The grammar must only ever produce JSON valid
 * against the caller's schema; it may produce less than all of it:
 * - every property an object describes is written (optional ones too: still valid);
 * - an object that describes properties gets no others unless `additionalProperties` allows
 *   them; one that describes none may have any;
 * - `oneOf` is read as `anyOf` (the grammar cannot rule out a value matching two branches);
 * - `format` is an annotation (as JSON Schema says), except `date-time`, `date` and `time`,
 *   which the grammar enforces.
 * What a grammar cannot enforce (`pattern`, `minimum`, `multipleOf`, `allOf`, `not`,
 * `uniqueItems`…) is refused with ERR_UNSUPPORTED naming the caller's field, and so is a
 * schema nested deeper than MAX_SCHEMA_DEPTH (translating it would exhaust the stack).
 */
import type { GbnfJsonSchema } from 'node-llama-cpp'
import { MeshError } from '../../../kernel/errors.js'
import { isRecord } from '../../../kernel/util.js'

type Schema = Record<string, unknown>
type Primitive = string | number | boolean | null

const TYPES: ReadonlySet<string> = new Set([
  'string',
  'number',
  'integer',
  'boolean',
  'null',
  'object',
  'array',
])
const ANNOTATIONS: ReadonlySet<string> = new Set([
  'title',
  'description',
  '$schema',
  '$id',
  '$comment',
  'examples',
  'default',
  'deprecated',
  'readOnly',
  'writeOnly',
  'format',
])
/** Schemas nested in one another at most (the root is at depth 1). */
export const MAX_SCHEMA_DEPTH = 64
const ENFORCED_FORMATS: ReadonlySet<string> = new Set(['date-time', 'date', 'time'])
/** The keywords each kind of value may carry besides annotations. */
const KEYWORDS = {
  string: ['minLength', 'maxLength'],
  number: [],
  integer: [],
  boolean: [],
  null: [],
  object: ['properties', 'required', 'additionalProperties', 'minProperties', 'maxProperties'],
  array: ['items', 'prefixItems', 'minItems', 'maxItems', 'uniqueItems'],
} as const satisfies Record<string, readonly string[]>
type Kind = keyof typeof KEYWORDS

/** Any JSON value, in node-llama-cpp's dialect. */
export const ANY_JSON: GbnfJsonSchema = {
  oneOf: [
    { type: ['string', 'number', 'boolean', 'null'] },
    { type: 'array' },
    { type: 'object', additionalProperties: true },
  ],
}

/** Any JSON object: `format: {type: 'json'}` without a schema. */
export const ANY_OBJECT: GbnfJsonSchema = { type: 'object', additionalProperties: true }

/** Whether a JSON value of `enum` or `const` is of `kind`. */
function isOfKind(value: Primitive, kind: Kind): boolean {
  if (kind === 'integer') return Number.isInteger(value)
  if (kind === 'null') return value === null
  return value !== null && typeof value === kind
}

/** Translates one schema; `param` is the caller's field, named in every error. */
class Translator {
  /** Schemas being translated, the one at hand among them. */
  private depth = 0

  constructor(
    private readonly param: string,
    private readonly defs: ReadonlySet<string>,
  ) {}

  /** @throws ERR_BAD_REQUEST for a schema that is not one, ERR_UNSUPPORTED for one the grammar cannot enforce */
  node(node: unknown, at: string): GbnfJsonSchema {
    if (this.depth >= MAX_SCHEMA_DEPTH)
      throw this.unsupported(at, `nests schemas deeper than ${MAX_SCHEMA_DEPTH} levels`)
    this.depth++
    try {
      return this.translate(node, at)
    } finally {
      this.depth--
    }
  }

  private translate(node: unknown, at: string): GbnfJsonSchema {
    if (node === true) return ANY_JSON
    if (node === false) throw this.unsupported(at, 'is `false`: no value can match it')
    if (!isRecord(node)) throw this.bad(at, 'must be an object or a boolean')
    if (node.$ref !== undefined) return this.ref(node, at)
    if (node.const !== undefined)
      return { const: this.literals(node, [node.const], 'const', at)[0] as Primitive }
    if (node.enum !== undefined) return this.enumOf(node, at)
    const branches = node.anyOf ?? node.oneOf
    if (branches !== undefined) return this.alternatives(node, branches, at)
    for (const key of ['allOf', 'not', 'if', 'then', 'else']) {
      if (node[key] !== undefined) throw this.unsupported(at, `uses '${key}'`)
    }
    const kinds = this.kindsOf(node, at)
    if (kinds === 'any') {
      this.onlyAnnotations(node, at, ['type'])
      return ANY_JSON
    }
    if (kinds.length === 1) return this.ofKind(node, kinds[0] as Kind, at)
    return { oneOf: kinds.map((k) => this.ofKind(node, k, at)) }
  }

  /** The kinds a node allows: its `type`, or what its keywords imply, or any. */
  private kindsOf(node: Schema, at: string): Kind[] | 'any' {
    const type = node.type
    if (type === undefined) {
      if (['properties', 'required', 'additionalProperties'].some((k) => node[k] !== undefined))
        return ['object']
      if (['items', 'prefixItems', 'minItems', 'maxItems'].some((k) => node[k] !== undefined))
        return ['array']
      if (node.minLength !== undefined || node.maxLength !== undefined) return ['string']
      return 'any'
    }
    const list = Array.isArray(type) ? type : [type]
    if (list.length === 0 || !list.every((t) => typeof t === 'string' && TYPES.has(t))) {
      throw this.bad(`${at}.type`, `must be one of ${[...TYPES].join(', ')}, or a list of them`)
    }
    return [...new Set(list as Kind[])]
  }

  private ofKind(node: Schema, kind: Kind, at: string): GbnfJsonSchema {
    const allowed: readonly string[] = Object.values(KEYWORDS).flat()
    this.onlyAnnotations(node, at, ['type', ...allowed])
    const description = typeof node.description === 'string' ? { description: node.description } : {}
    if (kind === 'object') return { ...this.object(node, at), ...description }
    if (kind === 'array') return { ...this.array(node, at), ...description }
    if (kind === 'string') return { ...this.string(node, at), ...description }
    return { type: kind, ...description }
  }

  private string(node: Schema, at: string): GbnfJsonSchema {
    const format = node.format
    if (typeof format === 'string' && ENFORCED_FORMATS.has(format)) {
      if (node.minLength !== undefined || node.maxLength !== undefined) {
        throw this.unsupported(at, `combines format '${format}' with a length`)
      }
      return { type: 'string', format: format as 'date-time' | 'date' | 'time' }
    }
    const minLength = this.count(node.minLength, `${at}.minLength`)
    const maxLength = this.count(node.maxLength, `${at}.maxLength`)
    return {
      type: 'string',
      ...(minLength !== undefined ? { minLength } : {}),
      ...(maxLength !== undefined ? { maxLength } : {}),
    }
  }

  private object(node: Schema, at: string): GbnfJsonSchema {
    const props = node.properties ?? {}
    if (!isRecord(props)) throw this.bad(`${at}.properties`, 'must be an object')
    const properties: Record<string, GbnfJsonSchema> = {}
    for (const [name, sub] of Object.entries(props))
      properties[name] = this.node(sub, `${at}.properties.${name}`)
    const required = node.required ?? []
    if (!Array.isArray(required) || !required.every((r) => typeof r === 'string')) {
      throw this.bad(`${at}.required`, 'must be a list of property names')
    }
    const undescribed = required.find((r) => !Object.hasOwn(properties, r))
    if (undescribed !== undefined)
      throw this.unsupported(at, `requires '${undescribed}' but does not describe it`)
    const extra = node.additionalProperties
    let additionalProperties: boolean | GbnfJsonSchema
    if (extra === undefined) additionalProperties = Object.keys(properties).length === 0
    else if (typeof extra === 'boolean') additionalProperties = extra
    else additionalProperties = this.node(extra, `${at}.additionalProperties`)
    const minProperties = this.count(node.minProperties, `${at}.minProperties`)
    const maxProperties = this.count(node.maxProperties, `${at}.maxProperties`)
    if (
      minProperties !== undefined &&
      minProperties > Object.keys(properties).length &&
      !additionalProperties
    ) {
      throw this.unsupported(at, 'asks for more properties than it allows')
    }
    return {
      type: 'object',
      properties,
      additionalProperties,
      ...(minProperties !== undefined ? { minProperties } : {}),
      ...(maxProperties !== undefined ? { maxProperties } : {}),
    }
  }

  private array(node: Schema, at: string): GbnfJsonSchema {
    if (node.uniqueItems === true) throw this.unsupported(at, "uses 'uniqueItems'")
    let { items, prefixItems } = node
    // Draft 4 to 2019-09 spelled a tuple as a list of `items`.
    if (Array.isArray(items) && prefixItems === undefined) [prefixItems, items] = [items, undefined]
    if (prefixItems !== undefined && !Array.isArray(prefixItems))
      throw this.bad(`${at}.prefixItems`, 'must be a list')
    const minItems = this.count(node.minItems, `${at}.minItems`)
    const maxItems = this.count(node.maxItems, `${at}.maxItems`)
    if (items === false && prefixItems === undefined) return { type: 'array', maxItems: 0 }
    if (items === false) {
      return {
        type: 'array',
        prefixItems: (prefixItems as unknown[]).map((p, i) => this.node(p, `${at}.prefixItems[${i}]`)),
        maxItems: (prefixItems as unknown[]).length,
        ...(minItems !== undefined ? { minItems } : {}),
      }
    }
    return {
      type: 'array',
      ...(items !== undefined ? { items: this.node(items, `${at}.items`) } : {}),
      ...(prefixItems !== undefined
        ? { prefixItems: (prefixItems as unknown[]).map((p, i) => this.node(p, `${at}.prefixItems[${i}]`)) }
        : {}),
      ...(minItems !== undefined ? { minItems } : {}),
      ...(maxItems !== undefined ? { maxItems } : {}),
    }
  }

  private alternatives(node: Schema, branches: unknown, at: string): GbnfJsonSchema {
    const key = node.anyOf !== undefined ? 'anyOf' : 'oneOf'
    if (!Array.isArray(branches) || branches.length === 0)
      throw this.bad(`${at}.${key}`, 'must be a non-empty list')
    this.onlyAnnotations(node, at, [key])
    return { oneOf: branches.map((b, i) => this.node(b, `${at}.${key}[${i}]`)) }
  }

  private enumOf(node: Schema, at: string): GbnfJsonSchema {
    const values = node.enum
    if (!Array.isArray(values) || values.length === 0)
      throw this.bad(`${at}.enum`, 'must be a non-empty list')
    return { enum: this.literals(node, values, 'enum', at) }
  }

  /**
   * The values of `enum` or `const` that the node's `type` allows: a grammar must not write
   * one the schema rejects. @throws ERR_UNSUPPORTED when none is left (no value can match)
   */
  private literals(node: Schema, values: unknown[], key: 'enum' | 'const', at: string): Primitive[] {
    this.onlyAnnotations(node, at, [key, 'type'])
    const literals = values.map((v) => this.literal(v, at, key))
    const kinds = this.kindsOf(node, at)
    if (kinds === 'any') return literals
    const allowed = literals.filter((v) => kinds.some((kind) => isOfKind(v, kind)))
    if (allowed.length === 0) throw this.unsupported(at, `has no value in '${key}' of its type`)
    return allowed
  }

  private ref(node: Schema, at: string): GbnfJsonSchema {
    this.onlyAnnotations(node, at, ['$ref', '$defs', 'definitions'])
    const ref = node.$ref
    const name = typeof ref === 'string' ? /^#\/(?:\$defs|definitions)\/([^/]+)$/.exec(ref)?.[1] : undefined
    if (name === undefined)
      throw this.unsupported(at, `refers to '${String(ref)}' (only '#/$defs/…' is followed)`)
    if (!this.defs.has(name)) throw this.bad(`${at}.$ref`, `names no definition '${name}'`)
    return { $ref: `#/$defs/${name}` } as GbnfJsonSchema
  }

  private literal(value: unknown, at: string, key: string): Primitive {
    if (value === null || ['string', 'number', 'boolean'].includes(typeof value)) return value as Primitive
    throw this.unsupported(at, `has an object or list in '${key}'`)
  }

  private count(value: unknown, at: string): number | undefined {
    if (value === undefined) return undefined
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 0)
      throw this.bad(at, 'must be an integer >= 0')
    return value
  }

  /** @throws ERR_UNSUPPORTED when `node` has a keyword neither in `allowed` nor an annotation */
  private onlyAnnotations(node: Schema, at: string, allowed: readonly string[]): void {
    for (const key of Object.keys(node)) {
      if (!ANNOTATIONS.has(key) && !allowed.includes(key) && key !== '$defs' && key !== 'definitions') {
        throw this.unsupported(at, `uses '${key}'`)
      }
    }
  }

  private bad(at: string, why: string): MeshError {
    return MeshError.badRequest(`${this.param}: ${at} ${why}`, { param: this.param })
  }

  private unsupported(at: string, why: string): MeshError {
    return MeshError.unsupported(this.param, `cannot be enforced by the llama.cpp backend: ${at} ${why}`)
  }
}

/**
 * `schema` in node-llama-cpp's dialect, its definitions (`$defs`, or `definitions`) at the root.
 * @throws ERR_BAD_REQUEST for a schema that is not one, ERR_UNSUPPORTED for one a grammar cannot enforce (both naming `param`)
 */
export function toGrammarSchema(schema: unknown, param: string): GbnfJsonSchema {
  const defsOf = isRecord(schema) ? (schema.$defs ?? schema.definitions) : undefined
  if (defsOf !== undefined && !isRecord(defsOf)) {
    throw MeshError.badRequest(`${param}: $defs must be an object`, { param })
  }
  const translator = new Translator(param, new Set(Object.keys(defsOf ?? {})))
  const root = translator.node(schema, 'schema')
  if (defsOf === undefined) return root
  const $defs: Record<string, GbnfJsonSchema> = {}
  for (const [name, def] of Object.entries(defsOf)) $defs[name] = translator.node(def, `schema.$defs.${name}`)
  return { ...root, $defs } as GbnfJsonSchema
}
