import type { InferenceSource } from '../../kernel/wire.js'

export type BackendKind = 'llamacpp' | 'ollama' | 'echo'

/**
 * What an admin may do to the models a backend holds (through a gateway: `llm-mesh model
 * rm|cp|load|unload`). Each throws ERR_BAD_REQUEST for a bad name, ERR_MODEL_NOT_FOUND for a
 * model it does not hold, ERR_UNSUPPORTED where the engine cannot do it.
 */
export interface ModelAdmin {
  /** Deletes the model. @throws ERR_CONFLICT while a request uses it (llama.cpp) */
  deleteModel(name: string): Promise<void>
  /** Makes `destination` another name of `source`. @throws ERR_CONFLICT when `destination` exists (llama.cpp) */
  copyModel(source: string, destination: string): Promise<void>
  /** Loads the model into memory, to stay for `keepAliveMs` idle (negative: until unloaded; default: the backend's). */
  loadModel(name: string, keepAliveMs?: number): Promise<void>
  /** Frees the model's memory; false when it was not loaded. @throws ERR_CONFLICT while a request uses it (llama.cpp) */
  unloadModel(name: string): Promise<boolean>
}

/** A local inference engine a processor wraps (an InferenceSource whose model admin is all there). `open()` before use, `close()` once done. */
export interface Backend extends Omit<InferenceSource, keyof ModelAdmin>, ModelAdmin {
  readonly kind: BackendKind
  open(): Promise<void>
  close(): Promise<void>
  /** One line for logs and `status`: what engine, where. */
  describe(): string
}
