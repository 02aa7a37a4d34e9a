/**
 * A small GGUF v3 writer: enough to produce test models that llama.cpp loads
 * (typed metadata, arrays, F32 tensors). Layout follows the GGUF spec in ggml's
 * docs/gguf.md; everything is little-endian.
 */

export const GGUF_MAGIC = 0x46554747 // "GGUF" read as a little-endian u32
export const GGUF_VERSION = 3
export const GGUF_DEFAULT_ALIGNMENT = 32

const GGML_TYPE_F32 = 0

/** GGUF metadata value type ids, as stored in the file. */
export const GGUF_VALUE_TYPE = {
  uint8: 0,
  int8: 1,
  uint16: 2,
  int16: 3,
  uint32: 4,
  int32: 5,
  float32: 6,
  bool: 7,
  string: 8,
  array: 9,
  uint64: 10,
  int64: 11,
  float64: 12,
} as const

export type GgufNumberType =
  | 'uint8'
  | 'int8'
  | 'uint16'
  | 'int16'
  | 'uint32'
  | 'int32'
  | 'float32'
  | 'float64'

export type GgufValue =
  | { type: GgufNumberType; value: number }
  | { type: 'uint64'; value: bigint | number }
  | { type: 'int64'; value: bigint | number }
  | { type: 'bool'; value: boolean }
  | { type: 'string'; value: string }
  | { type: 'array'; itemType: GgufNumberType; value: readonly number[] | Float32Array | Int32Array }
  | { type: 'array'; itemType: 'string'; value: readonly string[] }
  | { type: 'array'; itemType: 'bool'; value: readonly boolean[] }

export interface GgufTensor {
  name: string
  /** ggml order: dims[0] is the fastest-moving (row length), e.g. [n_embd, n_vocab] for token_embd. */
  dims: readonly number[]
  data: Float32Array
}

export interface GgufFile {
  /** Written in this order; order matters for byte-identical output. */
  metadata: ReadonlyArray<readonly [string, GgufValue]>
  tensors: readonly GgufTensor[]
}

/** Grows a buffer as values are appended; GGUF files for tests are small enough to build in memory. */
class ByteSink {
  private buf = Buffer.alloc(64 * 1024)
  length = 0

  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return
    let size = this.buf.length * 2
    while (size < this.length + n) size *= 2
    const next = Buffer.alloc(size)
    this.buf.copy(next, 0, 0, this.length)
    this.buf = next
  }

  u8(v: number): void {
    this.reserve(1)
    this.buf.writeUInt8(v, this.length)
    this.length += 1
  }

  i8(v: number): void {
    this.reserve(1)
    this.buf.writeInt8(v, this.length)
    this.length += 1
  }

  u16(v: number): void {
    this.reserve(2)
    this.buf.writeUInt16LE(v, this.length)
    this.length += 2
  }

  i16(v: number): void {
    this.reserve(2)
    this.buf.writeInt16LE(v, this.length)
    this.length += 2
  }

  u32(v: number): void {
    this.reserve(4)
    this.buf.writeUInt32LE(v, this.length)
    this.length += 4
  }

  i32(v: number): void {
    this.reserve(4)
    this.buf.writeInt32LE(v, this.length)
    this.length += 4
  }

  f32(v: number): void {
    this.reserve(4)
    this.buf.writeFloatLE(v, this.length)
    this.length += 4
  }

  f64(v: number): void {
    this.reserve(8)
    this.buf.writeDoubleLE(v, this.length)
    this.length += 8
  }

  u64(v: bigint | number): void {
    this.reserve(8)
    this.buf.writeBigUInt64LE(BigInt(v), this.length)
    this.length += 8
  }

  i64(v: bigint | number): void {
    this.reserve(8)
    this.buf.writeBigInt64LE(BigInt(v), this.length)
    this.length += 8
  }

  bytes(b: Uint8Array): void {
    this.reserve(b.length)
    this.buf.set(b, this.length)
    this.length += b.length
  }

  string(s: string): void {
    const b = Buffer.from(s, 'utf8')
    this.u64(b.length)
    this.bytes(b)
  }

  padTo(alignment: number): void {
    const pad = (alignment - (this.length % alignment)) % alignment
    this.reserve(pad)
    // The backing buffer is zero-filled, so skipping ahead writes zero padding.
    this.length += pad
  }

  result(): Buffer {
    return this.buf.subarray(0, this.length)
  }
}

function writeNumber(sink: ByteSink, type: GgufNumberType, v: number): void {
  const write: Record<GgufNumberType, (n: number) => void> = {
    uint8: (n) => sink.u8(n),
    int8: (n) => sink.i8(n),
    uint16: (n) => sink.u16(n),
    int16: (n) => sink.i16(n),
    uint32: (n) => sink.u32(n),
    int32: (n) => sink.i32(n),
    float32: (n) => sink.f32(n),
    float64: (n) => sink.f64(n),
  }
  write[type](v)
}

function writeValue(sink: ByteSink, value: GgufValue): void {
  sink.u32(GGUF_VALUE_TYPE[value.type])
  if (value.type === 'bool') sink.u8(value.value ? 1 : 0)
  else if (value.type === 'string') sink.string(value.value)
  else if (value.type === 'uint64') sink.u64(value.value)
  else if (value.type === 'int64') sink.i64(value.value)
  else if (value.type === 'array') {
    sink.u32(GGUF_VALUE_TYPE[value.itemType])
    sink.u64(value.value.length)
    if (value.itemType === 'string') for (const s of value.value) sink.string(s)
    else if (value.itemType === 'bool') for (const b of value.value) sink.u8(b ? 1 : 0)
    else {
      const items: ArrayLike<number> = value.value
      for (let i = 0; i < items.length; i++) writeNumber(sink, value.itemType, items[i])
    }
  } else writeNumber(sink, value.type, value.value)
}

function alignmentOf(metadata: GgufFile['metadata']): number {
  const entry = metadata.find(([key]) => key === 'general.alignment')
  if (!entry) return GGUF_DEFAULT_ALIGNMENT
  const [, v] = entry
  if (v.type !== 'uint32' || v.value <= 0 || v.value % 8 !== 0) {
    throw new TypeError('general.alignment must be a uint32 multiple of 8')
  }
  return v.value
}

/**
 * Encodes a GGUF v3 file. Same input, same bytes: nothing time- or
 * environment-dependent goes in. Throws TypeError on a tensor whose data does
 * not match its dims, or on duplicate keys/tensor names.
 */
export function encodeGguf(file: GgufFile): Buffer {
  const alignment = alignmentOf(file.metadata)
  const keys = new Set<string>()
  for (const [key] of file.metadata) {
    if (keys.has(key)) throw new TypeError(`duplicate GGUF key ${key}`)
    keys.add(key)
  }
  const names = new Set<string>()
  for (const t of file.tensors) {
    if (names.has(t.name)) throw new TypeError(`duplicate tensor ${t.name}`)
    names.add(t.name)
    const n = t.dims.reduce((a, b) => a * b, 1)
    if (n !== t.data.length) {
      throw new TypeError(
        `tensor ${t.name}: dims [${t.dims.join(', ')}] need ${n} floats, got ${t.data.length}`,
      )
    }
  }

  const sink = new ByteSink()
  sink.u32(GGUF_MAGIC)
  sink.u32(GGUF_VERSION)
  sink.u64(file.tensors.length)
  sink.u64(file.metadata.length)
  for (const [key, value] of file.metadata) {
    sink.string(key)
    writeValue(sink, value)
  }

  // Offsets are relative to the start of the data section, each aligned.
  let offset = 0
  for (const t of file.tensors) {
    sink.string(t.name)
    sink.u32(t.dims.length)
    for (const d of t.dims) sink.u64(d)
    sink.u32(GGML_TYPE_F32)
    sink.u64(offset)
    offset += t.data.byteLength
    offset += (alignment - (offset % alignment)) % alignment
  }

  sink.padTo(alignment)
  for (const t of file.tensors) {
    // Float32Array is host-endian; every platform Node supports for llama.cpp is little-endian.
    sink.bytes(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength))
    sink.padTo(alignment)
  }
  return sink.result()
}
