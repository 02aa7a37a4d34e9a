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

/** Structured JSON logs with levels (pino). */
export class LogFacility extends Facility {
  readonly name = 'log'
  readonly logger: Logger

  constructor(opts: LogOptions = {}) {
    super()
    const { level = 'info', bindings = {}, destination = process.stderr } = opts
    this.logger = pino({ level, base: { pid: process.pid, ...bindings } }, destination)
  }

  protected override async _open(): Promise<void> {}

  protected override async _close(): Promise<void> {
    this.logger.flush()
  }
}
