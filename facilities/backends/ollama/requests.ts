/**
 * Our requests as Ollama's: the same names (the wire follows Ollama), with
 * only what was set, so Ollama applies its own defaults to the rest.
 */
import type {
  ChatRequest as OllamaChatRequest,
  EmbedRequest as OllamaEmbedRequest,
  GenerateRequest as OllamaGenerateRequest,
  Message as OllamaMessage,
  Tool as OllamaTool,
} from 'ollama'
import { MeshError } from '../../../kernel/errors.js'
import type {
  AnswerShape,
  ChatMessage,
  ChatRequest,
  EmbedRequest,
  GenerateRequest,
} from '../../../kernel/wire.js'

/** A message as Ollama reads it: calls with their `id`, and `tool_call_id` (Ollama 0.12; the package's types lack both). */
type Message = Omit<OllamaMessage, 'tool_calls'> & {
  tool_calls?: Array<{ id: string; function: { name: string; arguments: Record<string, unknown> } }>
  tool_call_id?: string
}

type Shape = Pick<OllamaChatRequest, 'format' | 'think' | 'logprobs' | 'top_logprobs'>

function messageOf(m: ChatMessage): Message {
  const out: Message = { role: m.role, content: m.content }
  if (m.thinking) out.thinking = m.thinking
  if (m.toolCalls?.length) {
    out.tool_calls = m.toolCalls.map((c) => ({
      id: c.id,
      function: { name: c.name, arguments: c.arguments },
    }))
  }
  if (m.toolName !== undefined) out.tool_name = m.toolName
  if (m.toolCallId !== undefined) out.tool_call_id = m.toolCallId
  return out
}

/** `format` ("json", or the schema itself), `think` and `logprobs`/`top_logprobs`, those set only. */
function shapeOf(req: AnswerShape): Shape {
  const shape: Shape = {}
  if (req.format) shape.format = req.format.schema ?? 'json'
  if (req.think !== undefined) shape.think = req.think
  if (req.logprobs !== undefined) {
    shape.logprobs = true
    if (req.logprobs > 0) shape.top_logprobs = req.logprobs
  }
  return shape
}

/**
 * The tools Ollama is given: none with `toolChoice` 'none' (the model cannot call what it is not
 * shown); Ollama has no way to force a call, nor to hold a call's arguments to its schema.
 * @throws ERR_UNSUPPORTED for `toolChoice` 'required' or a named function, and for a tool's `strict: true`
 */
function toolsOf(req: ChatRequest): { tools?: OllamaTool[] } {
  const choice = req.toolChoice ?? 'auto'
  if (choice !== 'auto' && choice !== 'none') {
    throw MeshError.unsupported(
      'tool_choice',
      'is not supported by the ollama backend: Ollama cannot force a call',
    )
  }
  const strict = req.tools?.find((t) => t.function.strict === true)
  if (strict) {
    throw MeshError.unsupported(
      'tools.strict',
      `is not supported by the ollama backend: Ollama does not hold calls to the schema (tool '${strict.function.name}')`,
    )
  }
  if (!req.tools?.length || choice === 'none') return {}
  // The same JSON, without `strict` (false, so nothing to honour): Ollama's tools are OpenAI's;
  // its package types `parameters` more narrowly than a JSON Schema.
  return {
    tools: req.tools.map(({ type, function: { strict: _, ...fn } }) => ({
      type,
      function: fn,
    })) as OllamaTool[],
  }
}

/** @throws ERR_UNSUPPORTED for a `toolChoice` Ollama cannot honour */
export function chatRequest(
  model: string,
  req: ChatRequest,
): Omit<OllamaChatRequest, 'messages'> & { messages: Message[]; stream: true } {
  return {
    model,
    messages: req.messages.map(messageOf),
    ...toolsOf(req),
    ...shapeOf(req),
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
    ...shapeOf(req),
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
