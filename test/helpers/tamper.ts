/**
 * A sender that flips a byte of every block it serves: the Merkle proof it sends is genuine,
 * the data not. It wraps the replication channel's data message of hypercore 11.37 (pinned),
 * the last step before the wire, on every peer that connects to `core` from now on.
 */
interface DataMessage {
  block?: { value: Buffer } | null
}
interface TamperableCore {
  on(event: 'peer-add', listener: (peer: { wireData: { send(m: DataMessage): void } }) => void): unknown
}

/** Tampers with every block `core` sends from now on; `count()` says how many it sent. */
export function tamperBlocks(core: TamperableCore): { count(): number } {
  let tampered = 0
  core.on('peer-add', (peer) => {
    const send = peer.wireData.send.bind(peer.wireData)
    peer.wireData.send = (m) => {
      if (m.block) {
        const value = Buffer.from(m.block.value)
        value[0] = (value[0] ?? 0) ^ 0xff
        m.block = { ...m.block, value }
        tampered++
      }
      send(m)
    }
  })
  return { count: () => tampered }
}
