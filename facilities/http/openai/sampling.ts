/** OpenAI's sampling parameters, both completion endpoints alike, as the wire's generation options. */
import { MeshError } from '../../../kernel/errors.js'
import type { GenerationOptions } from '../../../kernel/wire.js'
import { unsupported } from './errors.js'
import type { Sampling } from './requests.js'

/** The options the caller set, renamed to the wire's (Ollama's) names; those left unset stay unset. */
function copySet(r: Sampling, o: GenerationOptions): void {
  if (r.temperature != null) o.temperature = r.temperature
  if (r.top_p != null) o.top_p = r.top_p
  if (r.top_k != null) o.top_k = r.top_k
  if (r.min_p != null) o.min_p = r.min_p
  if (r.seed != null) o.seed = r.seed
  if (r.stop != null) o.stop = typeof r.stop === 'string' ? [r.stop] : r.stop
  const repeat = r.repeat_penalty ?? r.repetition_penalty
  if (repeat != null) o.repeat_penalty = repeat
  if (r.presence_penalty != null) o.presence_penalty = r.presence_penalty
  if (r.frequency_penalty != null) o.frequency_penalty = r.frequency_penalty
}

/**
 * OpenAI sampling parameters as generation options (undefined when none is set), with
 * `max_tokens` as `num_predict`. The engines' extensions are taken under their own names:
 * `top_k`, `min_p`, `repeat_penalty` (llama.cpp's server), `repetition_penalty` (vLLM's).
 * @throws ERR_UNSUPPORTED for a non-empty `logit_bias`; ERR_BAD_REQUEST for both repeat penalties
 */
export function optionsOf(r: Sampling, maxTokens: number | null | undefined): GenerationOptions | undefined {
  if (r.logit_bias && Object.keys(r.logit_bias).length > 0) {
    throw unsupported('logit_bias', 'is not supported by this server: the engines take no bias per token')
  }
  if (r.repeat_penalty != null && r.repetition_penalty != null) {
    throw MeshError.badRequest('repetition_penalty: give it or repeat_penalty, not both', {
      param: 'repetition_penalty',
    })
  }
  const o: GenerationOptions = {}
  copySet(r, o)
  if (maxTokens != null) o.num_predict = maxTokens
  return Object.keys(o).length ? o : undefined
}

/** `n` for the wire: left out for one choice, the default. */
export const choiceCount = (n: number | null | undefined): { n?: number } => (n != null && n > 1 ? { n } : {})
