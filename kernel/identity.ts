import { createHmac } from 'node:crypto'
import DHT, { type KeyPair } from 'hyperdht'

/**
 * A gateway identity derived from a mesh secret: HMAC-SHA256(secret,
 * `llm-mesh/v1/<mesh>/gateway/<index>`) is the key pair's seed. Gateways
 * configured with the secret use it as their key pair; processors with the
 * secret compute the public keys of indices 0…n-1 and admit exactly those.
 * Whoever knows the secret can be a gateway of the mesh: keep it like a
 * private key.
 */
export function gatewayKeyPair(secret: string, mesh: string, index: number): KeyPair {
  const seed = createHmac('sha256', secret).update(`llm-mesh/v1/${mesh}/gateway/${index}`).digest()
  return DHT.keyPair(seed)
}

/**
 * What a processor that knows the mesh secret shows a gateway in `status` (`meshProof`):
 * HMAC-SHA256(secret, `llm-mesh processor <mesh> <processor key hex>`), hex. Bound to the
 * processor's key, which the connection authenticates, so a copy proves nothing for another key.
 */
export function processorProof(secret: string, mesh: string, processorKeyHex: string): string {
  return createHmac('sha256', secret).update(`llm-mesh processor ${mesh} ${processorKeyHex}`).digest('hex')
}
