import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import DHT from 'hyperdht'
import { MIN_NAT_NODES, startBootstrapNodes } from '../../facilities/net/bootstrap-nodes.js'
import { serveRelay } from '../../facilities/net/relays.js'
import { MeshError } from '../../kernel/errors.js'
import { HEX32 } from '../../kernel/util.js'
import { dataDir, int, parse, str, waitForSignal } from './common.js'

/** `llm-mesh bootstrap`: the DHT of a private mesh, and optionally a blind relay beside it. */

export const BOOTSTRAP_HELP = `Usage: llm-mesh bootstrap [--host 127.0.0.1] [--port 49737] [--nodes 5] [--relay [--data DIR]]

Runs the DHT of a private mesh: --nodes full DHT nodes on UDP ports PORT, PORT+1, …
Give HOST:PORT to every worker as --bootstrap. On a public host, --host is its public
address; workers behind NAT need 4 or more DHT nodes to hole-punch (docs/deployment.md).
--relay also serves a blind relay for peers that hole-punching cannot connect, and
prints its key ('relay KEY') for workers' --relay / net.relays; its identity is kept in
DIR/relay.seed (default ./.llm-mesh), so the key stays the same across restarts.`

/** The relay's key pair, from DIR/relay.seed (made on first use, mode 0600). */
async function relayKeyPair(dir: string) {
  const path = join(dir, 'relay.seed')
  if (existsSync(path)) {
    const hex = (await readFile(path, 'utf8')).trim()
    if (!HEX32.test(hex)) throw new MeshError('ERR_BAD_CONFIG', `${path}: not a 32-byte hex seed`)
    return DHT.keyPair(Buffer.from(hex, 'hex'))
  }
  await mkdir(dir, { recursive: true })
  const seed = randomBytes(32)
  await writeFile(path, `${seed.toString('hex')}\n`, { mode: 0o600 })
  await chmod(path, 0o600)
  return DHT.keyPair(seed)
}

export async function commandBootstrap(args: string[]): Promise<number> {
  const { values } = parse(args, {
    host: { type: 'string' },
    port: { type: 'string' },
    nodes: { type: 'string' },
    relay: { type: 'boolean' },
    data: { type: 'string' },
    help: { type: 'boolean' },
  })
  if (values.help) {
    process.stdout.write(`${BOOTSTRAP_HELP}\n`)
    return 0
  }
  const host = str(values.host) ?? '127.0.0.1'
  const port = int(values.port, 'port', 0) ?? 49737
  const count = int(values.nodes, 'nodes') ?? MIN_NAT_NODES + 1
  const keyPair = values.relay ? await relayKeyPair(dataDir(values)) : null
  const dht = await startBootstrapNodes({ host, port, count })
  const first = dht.nodes[0] as DHT
  const relay = keyPair ? await serveRelay(first, keyPair) : null
  if (relay) process.stdout.write(`relay ${relay.publicKey.toString('hex')}\n`)
  process.stdout.write(`bootstrap ready ${dht.bootstrap.map((b) => `${b.host}:${b.port}`).join(',')}\n`)
  await waitForSignal()
  await relay?.close()
  await dht.destroy()
  return 0
}
