import type { Cancellable, InferenceSource } from '../../kernel/wire.js'

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

/** What to pull onto a backend: a model name and, for llama.cpp, where from. */
export interface PullRequest {
  /** The model's name once pulled (llama.cpp: its file name without `.gguf`; Ollama: its tag). */
  model: string
  /** llama.cpp: an `http(s)://` URL or an `hf:` reference; Ollama ignores it (its registry). */
  source?: string
  /** Expected content digest, `sha256:<hex>` or `<hex>`; the model is not served unless it matches. */
  digest?: string
}

/** One progress frame of a pull, in Ollama's shape: bytes `completed` of `total`. */
export interface PullProgress {
  status: string
  digest?: string
  total?: number
  completed?: number
}

export interface PullCallbacks extends Cancellable {
  onProgress?: (p: PullProgress) => void
}

export interface PullResult {
  model: string
  /** The pulled file's sha256 (llama.cpp); Ollama's pull reports none. */
  digest?: string
  size?: number
}

/** A backend that can fetch models into its own store. */
export interface PullingBackend extends Backend {
  /** @throws ERR_BAD_REQUEST (bad name or source), ERR_DIGEST_MISMATCH, ERR_CANCELLED, ERR_BACKEND_UNAVAILABLE */
  pullModel(req: PullRequest, cb?: PullCallbacks): Promise<PullResult>
}

export function canPull(b: Backend): b is PullingBackend {
  return typeof (b as Partial<PullingBackend>).pullModel === 'function'
}
