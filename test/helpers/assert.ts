import type { Test } from 'brittle'
import { MeshError } from '../../kernel/errors.js'

/** Asserts that `p` rejects with a MeshError of `code`; returns it for further checks. */
export async function rejectsWith(
  t: Test,
  p: Promise<unknown>,
  code: string,
  message?: string,
): Promise<MeshError | null> {
  try {
    await p
  } catch (err) {
    const e = MeshError.from(err)
    t.is(e.code, code, message ?? `rejects with ${code}`)
    return e
  }
  t.fail(`${message ?? 'call'}: expected ${code}, but it resolved`)
  return null
}

/** Runs `fn`; returns the MeshError it throws (or null when it returns); anything else is rethrown. */
export function thrown(fn: () => unknown): MeshError | null {
  try {
    fn()
  } catch (err) {
    if (err instanceof MeshError) return err
    throw err
  }
  return null
}
