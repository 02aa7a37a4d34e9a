import { type Logger, pino } from 'pino'
import { Facility } from './facility.js'

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent'
export type { Logger }

export interface LogOptions {
  level?: LogLevel
  /** Bound into every line, e.g. `{ role: 'gateway' }`. */
  bindings?: Record<string, unknown>
  /** Where lines go; stderr by default so stdout stays for command output. */
  destination?: NodeJS.WritableStream
}

/**
 * Fields whose values never reach a log line, at the top of a logged object or one level down
 * (`{ req: { password } }`): a line that would carry a password, a key, a token or an
 * Authorization header says `[redacted]` instead. Defence in depth: no code logs these on
 * purpose (`test/integration/secrets-in-logs.test.ts` searches a run's logs for its secrets).
 */
export const REDACTED_FIELDS = [
  'password',
  'currentPassword',
  'newPassword',
  'apiKey',
  'accessToken',
  'refreshToken',
  'token',
  'authorization',
  'Authorization',
]
const REDACT_PATHS = [
  ...REDACTED_FIELDS,
  ...REDACTED_FIELDS.map((f) => `*.${f}`),
  'headers.authorization',
  '*.headers.authorization',
]

/** Structured JSON logs with levels (pino); secrets in known fields redacted. */
export class LogFacility extends Facility {
  readonly name = 'log'
  readonly logger: Logger

  constructor(opts: LogOptions = {}) {
    super()
    const { level = 'info', bindings = {}, destination = process.stderr } = opts
    this.logger = pino(
      {
        level,
        base: { pid: process.pid, ...bindings },
        redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      },
      destination,
    )
  }

  protected override async _open(): Promise<void> {}

  protected override async _close(): Promise<void> {
    this.logger.flush()
  }
}
