/**
 * The JSON body of every RPC request, reply and event, and its size limit. Apart from the
 * connection and the server because both sides encode with it.
 */
import { MeshError } from '../../kernel/errors.js'

/** protomux-rpc closes the whole connection above ~16 MiB; stay well under. */
export const MAX_MESSAGE_BYTES = 8 * 1024 * 1024

/**
 * The largest reply a server sends. Above MAX_MESSAGE_BYTES, as a reply's size is not the
 * caller's to choose, yet under the ~16 MiB (16,777,215 bytes with its framing) at which
 * protomux-rpc closes the whole connection: a reply over it (an answer with 20 alternatives
 * per token, ~1.75 KB each, sent whole) fails alone instead of every call on the link.
 */
export const MAX_REPLY_BYTES = 15 * 1024 * 1024

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
