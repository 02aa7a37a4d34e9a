import { MeshError } from '../../kernel/errors.js'

/**
 * The function names of the calls a conversation has made so far, by call id: each dialect's
 * tool result names only the call it answers, the wire's `tool` message also its function.
 */
export class CallNames {
  private readonly names = new Map<string, string>()

  /** Remembers a call's function name. */
  add(call: { readonly id: string; readonly name: string }): void {
    this.names.set(call.id, call.name)
  }

  /**
   * The function name of the earlier call `id`, which the result at `param` answers.
   * @param earlier the dialect's words for such a call and its id (`tool_use block has id`)
   * @throws ERR_BAD_REQUEST at `param` when no earlier call has that id
   */
  answered(id: string, param: string, earlier: string): string {
    const name = this.names.get(id)
    if (name === undefined) throw MeshError.badRequest(`${param}: no earlier ${earlier} '${id}'`, { param })
    return name
  }
}
