/**
 * Our requests as Ollama's: the same names (the wire follows Ollama), with
 * only what was set, so Ollama applies its own defaults to the rest.
 */
import type {
  ChatRequest as OllamaChatRequest,
  EmbedRequest as OllamaEmbedRequest,
  GenerateRequest as OllamaGenerateRequest,
} from 'ollama'
import type { ChatRequest, EmbedRequest, GenerateRequest } from '../../../kernel/wire.js'

export function chatRequest(model: string, req: ChatRequest): OllamaChatRequest & { stream: true } {
  return {
    model,
    messages: req.messages.map((m) => ({ role: m.role, content: m.content })),
    ...(req.options ? { options: req.options } : {}),
    stream: true,
  }
}

export function generateRequest(
  model: string,
  req: GenerateRequest,
): OllamaGenerateRequest & { stream: true } {
  return {
    model,
    prompt: req.prompt,
    ...(req.system !== undefined ? { system: req.system } : {}),
    ...(req.raw !== undefined ? { raw: req.raw } : {}),
    ...(req.options ? { options: req.options } : {}),
    stream: true,
  }
}

export function embedRequest(model: string, req: EmbedRequest): OllamaEmbedRequest {
  return {
    model,
    input: req.input,
    ...(req.truncate !== undefined ? { truncate: req.truncate } : {}),
  }
}
