import { Writable } from 'node:stream'
import {
  type ConfigInput,
  gatewayConfigSchema,
  parseConfig,
  processorConfigSchema,
} from '../../kernel/config.js'
import { deepMerge } from '../../kernel/config-load.js'
import { GatewayWorker } from '../../workers/gateway/gateway.worker.js'
import { ProcessorWorker } from '../../workers/processor/processor.worker.js'
import { FAST_REGISTRY, type T, TEST_AUTH, testnet, until } from './mesh.js'

/** Every log line a worker writes, kept as raw text (and parsed). */
export class LogCapture extends Writable {
  text = ''

  override _write(chunk: Buffer | string, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.text += chunk.toString()
    done()
  }

  /** The lines, parsed. */
  lines(): Record<string, unknown>[] {
    return this.text
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
  }

  /** The lines that carry `reqId`. */
  about(reqId: string): Record<string, unknown>[] {
    return this.lines().filter((l) => l.reqId === reqId)
  }
}

export interface TracedMesh {
  gateway: GatewayWorker
  processor: ProcessorWorker
  gatewayLog: LogCapture
  processorLog: LogCapture
  bootstrap: string[]
}

/**
 * A gateway (HTTP on a free loopback port) and an echo processor, both in this process, both
 * logging at `level` into captures.
 */
export async function tracedMesh(
  t: T,
  opts: { gateway?: ConfigInput; level?: string } = {},
): Promise<TracedMesh> {
  const level = opts.level ?? 'debug'
  const { bootstrap } = await testnet(t)
  const gatewayLog = new LogCapture()
  const processorLog = new LogCapture()
  const gatewayConfig = parseConfig(
    gatewayConfigSchema,
    deepMerge(
      {
        bootstrap,
        store: await t.tmp(),
        log: { level },
        registry: FAST_REGISTRY,
        auth: TEST_AUTH,
        http: { enabled: true, port: 0 },
      },
      opts.gateway ?? {},
    ),
  )
  const gateway = new GatewayWorker(gatewayConfig, { logDestination: gatewayLog })
  t.teardown(() => gateway.close(), { order: 1 })
  await gateway.ready()
  const processorConfig = parseConfig(processorConfigSchema, {
    bootstrap,
    store: await t.tmp(),
    log: { level },
    backend: { type: 'echo' },
    firewall: { trustedGateways: [gateway.publicKeyHex] },
  })
  const processor = new ProcessorWorker(processorConfig, { logDestination: processorLog })
  t.teardown(() => processor.close(), { order: 1 })
  await processor.ready()
  if (!(await until(() => gateway.router.size === 1, 10_000)))
    throw new Error('the gateway never saw the processor')
  return { gateway, processor, gatewayLog, processorLog, bootstrap }
}
