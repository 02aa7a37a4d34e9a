import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import test from 'brittle'
import { readGgufFileInfo } from 'node-llama-cpp'
import { encodeGguf, GGUF_MAGIC, GGUF_VERSION } from '../../../facilities/tiny-model/gguf-writer.js'
import {
  encodeTinyModel,
  TINY_MODEL_NAME,
  writeTinyModel,
} from '../../../facilities/tiny-model/tiny-model.js'

/** The error `fn` throws, or null. brittle's t.exception treats TypeError/RangeError as bugs, not results. */
function thrown(fn: () => unknown): Error | null {
  try {
    fn()
  } catch (err) {
    return err instanceof Error ? err : new Error(String(err))
  }
  return null
}

/** The fixed GGUF header: magic, version, tensor count, metadata KV count. */
function header(buf: Buffer): { magic: number; version: number; tensors: bigint; kvs: bigint } {
  return {
    magic: buf.readUInt32LE(0),
    version: buf.readUInt32LE(4),
    tensors: buf.readBigUInt64LE(8),
    kvs: buf.readBigUInt64LE(16),
  }
}

test('gguf writer: header, typed values and aligned tensor data', async (t) => {
  const data = Float32Array.from([1, 2, 3, 4, 5, 6])
  const buf = encodeGguf({
    metadata: [
      ['general.architecture', { type: 'string', value: 'llama' }],
      ['test.u32', { type: 'uint32', value: 7 }],
      ['test.flag', { type: 'bool', value: true }],
      ['test.big', { type: 'uint64', value: 2n ** 40n }],
      ['test.words', { type: 'array', itemType: 'string', value: ['a', 'bc'] }],
      ['test.floats', { type: 'array', itemType: 'float32', value: [0.5, 1.5] }],
      ['test.ints', { type: 'array', itemType: 'int32', value: [-1, 2, 3] }],
    ],
    tensors: [
      { name: 'a', dims: [3, 2], data },
      { name: 'b', dims: [1], data: Float32Array.from([9]) },
    ],
  })
  const h = header(buf)
  t.is(h.magic, GGUF_MAGIC, 'magic is GGUF')
  t.is(buf.subarray(0, 4).toString('latin1'), 'GGUF')
  t.is(h.version, GGUF_VERSION)
  t.is(h.tensors, 2n)
  t.is(h.kvs, 7n)
  t.is(buf.length % 32, 0, 'file padded to the alignment')

  // node-llama-cpp's reader is the independent check of every typed value.
  const path = join(await t.tmp(), 'small.gguf')
  await writeFile(path, buf)
  const parsed = await readGgufFileInfo(path, { logWarnings: false })
  t.is(parsed.version, 3)
  const meta = parsed.metadata as unknown as { test: Record<string, unknown> }
  t.is(meta.test.u32, 7)
  t.is(meta.test.flag, true)
  t.is(meta.test.big, 2n ** 40n)
  t.alike(meta.test.words, ['a', 'bc'])
  t.alike(meta.test.floats, [0.5, 1.5])
  t.alike(meta.test.ints, [-1, 2, 3])
  const tensors = parsed.tensorInfo ?? []
  t.alike(
    tensors.map((x) => [x.name, x.dimensions.map(Number), Number(x.offset)]),
    [
      ['a', [3, 2], 0],
      ['b', [1], 32],
    ],
    'dims in ggml order, offsets aligned to 32',
  )
  const first = tensors[0]
  if (first) {
    const at = Number(first.fileOffset)
    t.is(at % 32, 0, 'data section aligned')
    t.alike(
      Array.from(new Float32Array(buf.buffer.slice(buf.byteOffset + at, buf.byteOffset + at + 24))),
      [1, 2, 3, 4, 5, 6],
    )
  }
})

test('gguf writer: rejects data that does not match its dims', async (t) => {
  const wrongSize = thrown(() =>
    encodeGguf({ metadata: [], tensors: [{ name: 'x', dims: [2, 2], data: new Float32Array(3) }] }),
  )
  t.ok(wrongSize instanceof TypeError && /need 4 floats/.test(wrongSize.message), String(wrongSize))
  const duplicate = thrown(() =>
    encodeGguf({
      metadata: [
        ['k', { type: 'uint32', value: 1 }],
        ['k', { type: 'uint32', value: 2 }],
      ],
      tensors: [],
    }),
  )
  t.ok(duplicate instanceof TypeError && /duplicate/.test(duplicate.message), String(duplicate))
})

test('tiny model: same options, same bytes; step changes the weights', async (t) => {
  const a = encodeTinyModel()
  const b = encodeTinyModel({ step: 1 })
  t.ok(a.equals(b), 'deterministic')
  const c = encodeTinyModel({ step: 2 })
  t.is(c.length, a.length)
  t.absent(a.equals(c), 'step 2 differs')
  const h = header(a)
  t.is(h.magic, GGUF_MAGIC)
  t.is(h.version, 3)
  t.is(h.tensors, BigInt(3 + 9 * 4), 'embeddings, norm, output + 9 per layer')
  t.ok(a.length > 1_000_000 && a.length < 8_000_000, `a few MB (${a.length} bytes)`)
  t.ok(thrown(() => encodeTinyModel({ step: 0 })) instanceof RangeError, 'step 0 is rejected')
})

test('tiny model: written atomically and parses as a llama GGUF', async (t) => {
  const dir = join(await t.tmp(), 'nested', 'models')
  const path = join(dir, `${TINY_MODEL_NAME}.gguf`)
  await writeTinyModel(path, { name: 'custom name' })
  t.alike(await readdir(dir), [`${TINY_MODEL_NAME}.gguf`], 'parent folders created, no temp file left')
  t.ok((await readFile(path)).equals(encodeTinyModel({ name: 'custom name' })))

  const info = await readGgufFileInfo(path, { logWarnings: false })
  const meta = info.metadata as unknown as {
    general: Record<string, unknown>
    llama: Record<string, unknown>
    tokenizer: { ggml: Record<string, unknown>; chat_template: string }
  }
  t.is(info.version, 3)
  t.is(meta.general.architecture, 'llama')
  t.is(meta.general.name, 'custom name')
  t.is(meta.llama.embedding_length, 128)
  t.is(meta.llama.block_count, 4)
  t.is(meta.tokenizer.ggml.model, 'llama')
  t.is(meta.tokenizer.ggml.add_space_prefix, false)
  const tokens = meta.tokenizer.ggml.tokens as string[]
  t.is(tokens.length, 3 + 256 + 95)
  t.alike(tokens.slice(0, 4), ['<unk>', '<s>', '</s>', '<0x00>'])
  t.ok(tokens.includes('\u2581') && tokens.includes('a') && tokens.includes('~'))
  t.ok(meta.tokenizer.chat_template.includes('messages'))

  await writeTinyModel(path)
  const renamed = await readGgufFileInfo(path, { logWarnings: false })
  t.ok(String((renamed.metadata as unknown as typeof meta).general.name).includes('not a real LLM'))
})
