/**
 * The JSON body of every RPC request, reply and event, and its size limit. Apart from the
 * connection and the server because both sides encode with it.
 */
import { MeshError } from '../../kernel/errors.js'

/** protomux-rpc closes the whole connection above ~16 MiB; stay well under. */
export const MAX_MESSAGE_BYTES = 8 * 1024 * 1024

export function encodeJSON(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value === undefined ? null : value))
}

/** @throws ERR_BAD_REQUEST with a reason starting 'payload ' (the server counts those apart) */
export function decodeJSON(buf: Buffer | null): unknown {
  // protomux-rpc hands a handler null for a zero-byte payload.
  if (!buf || buf.byteLength === 0) throw MeshError.badRequest('payload is empty: expected JSON')
  try {
    return JSON.parse(buf.toString('utf8'))
  } catch {
    throw MeshError.badRequest('payload is not valid JSON')
  }
}
