import { createServer, type Server } from 'node:http'
import { MeshError } from '../../kernel/errors.js'
import type { Health } from '../../kernel/wire.js'
import { Facility } from '../facility.js'
import { PROBE_PATHS, serveProbe } from '../http/health-routes.js'
import { baseUrl, closeServer, listenOn, pathOf } from '../http/plumbing.js'
import type { Logger } from '../log.facility.js'

/** What a scrape answers: Prometheus's text format (a registry's, or a gateway's view of the mesh). */
export interface Exposition {
  text(): Promise<string>
  contentType: string
}

export interface MetricsHttpOptions {
  host: string
  /** 0: any free port. */
  port: number
  exposition: Exposition
  logger: Logger
  /** What `GET /healthz` and `GET /readyz` answer beside `/metrics`; none: 404. */
  health?: (() => Promise<Health>) | undefined
}

/**
 * A worker's own `GET /metrics` (Prometheus's text format) for a worker without an HTTP API
 * (a processor, a gateway without `http`), with the health probes `GET /healthz` and `/readyz`;
 * nothing else (404). Open to whoever reaches the port, so it binds loopback unless configured
 * otherwise.
 */
export class MetricsHttpFacility extends Facility {
  readonly name = 'metrics-http'
  private readonly opts: MetricsHttpOptions
  private server: Server | null = null
  private bound: number | null = null

  constructor(opts: MetricsHttpOptions) {
    super()
    this.opts = opts
  }

  /** E.g. http://127.0.0.1:9464/metrics. @throws ERR_UNAVAILABLE before it listens */
  get url(): string {
    if (this.bound === null) throw new MeshError('ERR_UNAVAILABLE', 'the metrics endpoint is not listening')
    return `${baseUrl(this.opts.host, this.bound)}/metrics`
  }

  protected override async _open(): Promise<void> {
    const { exposition } = this.opts
    const server = createServer((req, res) => {
      const path = pathOf(req) ?? ''
      const { health } = this.opts
      if (health && PROBE_PATHS.has(path)) {
        serveProbe(path, req, res, health).catch((err: unknown) => {
          this.opts.logger.warn({ err }, 'health probe failed')
          if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain' }).end('probe failed\n')
        })
        return
      }
      if (path !== '/metrics') {
        res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n')
        return
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain' }).end('method not allowed\n')
        return
      }
      exposition.text().then(
        (text) => {
          res.writeHead(200, {
            'Content-Type': exposition.contentType,
            'Content-Length': Buffer.byteLength(text),
          })
          res.end(req.method === 'HEAD' ? undefined : text)
        },
        (err: unknown) => {
          this.opts.logger.warn({ err }, 'metrics scrape failed')
          res.writeHead(500, { 'Content-Type': 'text/plain' }).end('scrape failed\n')
        },
      )
    })
    this.bound = await listenOn(server, this.opts.host, this.opts.port)
    this.server = server
    this.opts.logger.info({ url: this.url }, 'metrics: Prometheus endpoint')
  }

  protected override async _close(): Promise<void> {
    const server = this.server
    this.server = null
    if (server) await closeServer(server)
  }
}
