/** HTTP calls the tests make to a gateway's APIs. */

/** `POST url` with `body` as JSON and `key` as the bearer credential. */
export function post(url: string, body: unknown, key: string): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    body: JSON.stringify(body),
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${key}` },
  })
}

/** A chat request for the echo backend (Ollama's and OpenAI's shape alike), not streamed unless `extra` says. */
export const chat = (extra: Record<string, unknown> = {}) => ({
  model: 'echo',
  messages: [{ role: 'user', content: 'count these words please' }],
  stream: false,
  ...extra,
})
