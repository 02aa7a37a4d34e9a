/**
 * The DHT nodes `llm-mesh bootstrap` runs for a private mesh: `count` full nodes on one host,
 * at `port`, `port + 1`, … (fixed ports, so a firewall can open exactly them). The first is the
 * address workers are given as `--bootstrap`; the others make the DHT big enough for NAT
 * traversal: a node behind NAT learns its NAT's kind by asking several DHT nodes how they see
 * it (hyperdht wants 3 or more answers), and cannot hole-punch before it knows.
 */
import DHT, { type HostPort } from 'hyperdht'

export interface BootstrapNodes {
  /** host:port of the first node: what workers take as their bootstrap. */
  bootstrap: HostPort[]
  nodes: DHT[]
  destroy(): Promise<void>
}

/** Fewest nodes that let a host behind NAT find out its NAT kind (see above). */
export const MIN_NAT_NODES = 4

export async function startBootstrapNodes(opts: {
  host: string
  port: number
  count: number
}): Promise<BootstrapNodes> {
  const { host, port, count } = opts
  const bindHost = host === '127.0.0.1' ? host : '0.0.0.0'
  const bootstrap: HostPort[] = [{ host, port }]
  const nodes: DHT[] = []
  const destroy = async () => {
    await Promise.allSettled(nodes.map((n) => n.destroy()))
  }
  try {
    for (let i = 0; i < count; i++) {
      // The first node starts the DHT (no bootstrap of its own); the rest join through it.
      const at = (p: number) =>
        new DHT({
          ephemeral: false,
          firewalled: false,
          bootstrap: i === 0 ? [] : bootstrap,
          host: bindHost,
          port: p,
        })
      let node = at(port === 0 ? 0 : port + i)
      try {
        await node.fullyBootstrapped()
      } catch (err) {
        // The first node's port is the mesh's address; another's is only a convenience for firewalls.
        await node.destroy()
        if (i === 0 || port === 0) throw err
        node = at(0)
        await node.fullyBootstrapped()
      }
      nodes.push(node)
      if (i === 0 && port === 0) bootstrap[0] = { host, port: node.address().port }
    }
  } catch (err) {
    await destroy()
    throw err
  }
  return { bootstrap, nodes, destroy }
}
