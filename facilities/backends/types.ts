import type { InferenceSource } from '../../kernel/wire.js'

export type BackendKind = 'llamacpp' | 'ollama' | 'echo'

/** A local inference engine a processor wraps. `open()` before use, `close()` once done. */
export interface Backend extends InferenceSource {
  readonly kind: BackendKind
  open(): Promise<void>
  close(): Promise<void>
  /** One line for logs and `status`: what engine, where. */
  describe(): string
}
