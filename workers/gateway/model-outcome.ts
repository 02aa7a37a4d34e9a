/**
 * One processor's failed outcome of a model change the gateway ordered on several (a pull,
 * a copy, a remove or load): the others go on, and the reply lists each processor's outcome.
 */
import { isErrorCode, MeshError } from '../../kernel/errors.js'

export interface FailedOn {
  processor: string
  ok: false
  error: { code: string; message: string }
}

/** `err` as `processor`'s failed outcome: its code and reason. */
export function failedOn(processor: string, err: unknown): FailedOn {
  const e = MeshError.from(err)
  return { processor, ok: false, error: { code: e.code, message: e.reason } }
}

/** The error a failed outcome carries, as a MeshError (a code this gateway does not know: ERR_INTERNAL). */
export function errorOf(failed: FailedOn['error']): MeshError {
  return new MeshError(isErrorCode(failed.code) ? failed.code : 'ERR_INTERNAL', failed.message)
}
