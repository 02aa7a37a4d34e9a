import { type IncomingMessage, ServerResponse } from 'node:http'
import { ERROR_CODES, MeshError } from '../../kernel/errors.js'

/** The HTTP dialect a request came in by: its `api` label in the metrics. */
export type HttpApi = 'ollama' | 'openai' | 'anthropic' | 'responses'

/** What the HTTP layer reports for metrics, and where it reads them from. */
export interface HttpMetrics {
  /** One request answered (or left): its API, outcome (`ok` or a MeshError code) and duration. */
  request(api: HttpApi, code: string, seconds: number): void
  /** A streamed answer's first piece of text, `seconds` after the request arrived. */
  firstToken(api: HttpApi, seconds: number): void
  /** The gateway's own time on a request a processor answered (see `ownSeconds`). */
  overhead(api: HttpApi, seconds: number): void
  /** The scrape: Prometheus's text format. */
  text(): Promise<string>
  contentType: string
}

/**
 * A response that remembers what metrics need of it: the MeshError code of a failure, set
 * where the failure is answered, and when a streamed answer's first text went out.
 */
export class ObservedResponse<
  Request extends IncomingMessage = IncomingMessage,
> extends ServerResponse<Request> {
  /** The MeshError code of the failure answered, if one was. */
  failure: string | null = null
  /** performance.now() when the first streamed piece of text was written; 0 before. */
  firstTokenAt = 0
}

/** Notes the failure `err` answers on `res` (any ServerResponse; only an ObservedResponse keeps it). */
export function noteFailure(res: ServerResponse, err: unknown): void {
  if (res instanceof ObservedResponse) res.failure = MeshError.from(err).code
}

/** Notes that the first streamed piece of text goes out now. */
export function noteFirstToken(res: ServerResponse): void {
  if (res instanceof ObservedResponse && res.firstTokenAt === 0) res.firstTokenAt = performance.now()
}

/** The first MeshError code of each HTTP status. */
const CODE_OF_STATUS = new Map<number, string>()
for (const [code, status] of Object.entries(ERROR_CODES)) {
  if (!CODE_OF_STATUS.has(status)) CODE_OF_STATUS.set(status, code)
}

/**
 * A finished response's outcome: the failure noted, else `ERR_CANCELLED` when the client left
 * before the end, else for an error status without a noted failure (a route's own 404 or 405)
 * the first code of that status, else `ok`.
 */
export function outcomeOf(res: ObservedResponse): string {
  if (res.failure) return res.failure
  if (!res.writableFinished) return 'ERR_CANCELLED'
  const status = res.statusCode
  if (status < 400) return 'ok'
  return CODE_OF_STATUS.get(status) ?? (status < 500 ? 'ERR_BAD_REQUEST' : 'ERR_INTERNAL')
}
