import { MeshError } from '../../kernel/errors.js'
import type { ChatRequest, GenerateCallbacks, GenerationResult, InferenceSource } from '../../kernel/wire.js'

/**
 * A backend that cannot honour a field refuses it by its wire name (`think`, `format`,
 * `tools`); a dialect whose caller named it otherwise (Anthropic's `thinking`, the Responses
 * API's `reasoning.effort`) passes the refusal on under the caller's name. Any other error
 * is returned as it is.
 */
export function asCallerNamed(err: unknown, names: Readonly<Record<string, string>>): unknown {
  if (!(err instanceof MeshError) || err.code !== 'ERR_UNSUPPORTED') return err
  const param = err.details?.param
  if (typeof param !== 'string') return err
  const name = names[param]
  if (name === undefined) return err
  const reason = err.reason.startsWith(`${param} `)
    ? name + err.reason.slice(param.length)
    : `${name}: ${err.reason}`
  return new MeshError('ERR_UNSUPPORTED', reason, { ...err.details, param: name }, err)
}

/**
 * Runs `chat` over `source`, a refusal passed on under the caller's names (`asCallerNamed`).
 * A backend refusing `tools.strict` refuses the first tool asking for it: `strictAt(i)` names
 * that field as the caller did, `i` the tool's place (the same in the caller's list and the wire's).
 */
export function chatAsCallerNamed(
  source: InferenceSource,
  chat: ChatRequest,
  names: Readonly<Record<string, string>>,
  strictAt: (i: number) => string,
): (cb: GenerateCallbacks) => Promise<GenerationResult> {
  const strict = chat.tools?.findIndex((t) => t.function.strict === true) ?? -1
  const all = strict < 0 ? names : { ...names, 'tools.strict': strictAt(strict) }
  return (cb) =>
    source.chat(chat, cb).catch((err: unknown) => {
      throw asCallerNamed(err, all)
    })
}
