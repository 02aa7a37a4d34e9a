/**
 * The baseline of bench/http.ts, as a process of its own: the project's
 * Ollama-compatible route layer over the instant echo backend — what a
 * processor's engine answers over HTTP, with no gateway in front. Sends its
 * URL over IPC and exits when its parent goes.
 *
 *   node dist/bench/ollama-echo-server.js   (started by bench/http.ts)
 */
import { EchoBackend } from '../facilities/backends/echo.backend.js'
import { OllamaCompatServer } from '../facilities/http/ollama-api.js'

const backend = new EchoBackend()
await backend.open()
const server = new OllamaCompatServer({ source: backend })
await server.listen()
process.send?.({ type: 'ready', url: server.url })
process.once('disconnect', () => {
  void server.close().then(() => process.exit(0))
})
