/** Server-sent events, as the OpenAI, Anthropic and Responses dialects stream their answers. */

/** The head of a server-sent event stream. */
export const SSE_HEADERS = {
  'Content-Type': 'text/event-stream; charset=utf-8',
  'Cache-Control': 'no-cache',
  Connection: 'keep-alive',
  'X-Accel-Buffering': 'no',
} as const

/** One event without a name (`data: …`): a string as it is, anything else as JSON. */
export function dataEvent(data: unknown): string {
  return `data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`
}

/** One event with its name, as Anthropic's and OpenAI's Responses streams frame them. */
export function namedEvent(name: string, data: unknown): string {
  return `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`
}
