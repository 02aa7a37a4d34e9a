/**
 * The backend of bench/ollama-path.ts, in a process of its own: a server that
 * speaks Ollama's protocol as Ollama does (`/api/*` and its OpenAI-compatible
 * `/v1/*`), over the instant echo backend, with no accounts. It is what both
 * the Portkey gateway (which calls `/v1/chat/completions` for its `ollama`
 * provider) and an llm-mesh processor's Ollama backend (`/api/chat`) call.
 * Sends its URL over IPC and exits when its parent goes.
 *
 *   node dist/bench/ollama-protocol-server.js   (started by bench/ollama-path.ts)
 */
import { EchoBackend } from '../facilities/backends/echo.backend.js'
import { HttpFacility } from '../facilities/http/http.facility.js'
import { LogFacility } from '../facilities/log.facility.js'

const backend = new EchoBackend()
await backend.open()
const log = new LogFacility({ level: 'warn' })
const http = new HttpFacility({
  host: '127.0.0.1',
  port: 0,
  maxBodyBytes: 1024 * 1024,
  logger: log.logger,
  authenticate: () => null,
  sourceFor: () => backend,
})
await http.ready()
process.send?.({ type: 'ready', url: http.url })
process.once('disconnect', () => {
  void http.close().then(() => process.exit(0))
})
