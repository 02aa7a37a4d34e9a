import { MeshError } from '../../kernel/errors.js'
import type { ModelManifest } from './blob-store.js'

const HEX64 = /^[0-9a-f]{64}$/

function count(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 0
}

/**
 * Checks a manifest that came from elsewhere (the gateway, a peer) before
 * anything is opened for it; returns a clean copy. ERR_BAD_REQUEST names the
 * first field that is wrong.
 */
export function parseManifest(input: unknown): ModelManifest {
  const bad = (field: string) => new MeshError('ERR_BAD_REQUEST', `model manifest: bad ${field}`, { field })
  if (typeof input !== 'object' || input === null) throw bad('manifest')
  const m = input as Record<string, unknown>
  if (
    typeof m.name !== 'string' ||
    !m.name ||
    m.name.includes('/') ||
    m.name.includes('\\') ||
    m.name.startsWith('.')
  )
    throw bad('name')
  if (!count(m.size)) throw bad('size')
  if (typeof m.sha256 !== 'string' || !HEX64.test(m.sha256)) throw bad('sha256')
  if (typeof m.key !== 'string' || !HEX64.test(m.key)) throw bad('key')
  if (!count(m.blockSize) || m.blockSize < 1) throw bad('blockSize')
  const b = m.blob as Record<string, unknown> | null
  if (typeof b !== 'object' || b === null) throw bad('blob')
  if (!count(b.blockOffset) || !count(b.blockLength) || !count(b.byteOffset) || !count(b.byteLength))
    throw bad('blob')
  if (b.byteLength !== m.size) throw bad('blob.byteLength')
  if (b.blockLength !== Math.ceil(m.size / m.blockSize)) throw bad('blob.blockLength')
  return {
    name: m.name,
    size: m.size,
    sha256: m.sha256,
    key: m.key,
    blob: {
      blockOffset: b.blockOffset,
      blockLength: b.blockLength,
      byteOffset: b.byteOffset,
      byteLength: b.byteLength,
    },
    blockSize: m.blockSize,
  }
}
