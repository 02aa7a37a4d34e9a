import { createHash } from 'node:crypto'
import { appendFile, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { crc32 } from 'node:zlib'
import test from 'brittle'
import { Journal } from '../../../facilities/usage/journal.js'

interface Block {
  v: number
}

/** The values of every block, as a journal opened afresh on `dir` reads them. */
async function reopened(dir: string): Promise<number[]> {
  const j = new Journal<Block>(dir)
  const values = (await j.open(0)).map((e) => e.block.v)
  await j.close()
  return values
}

test('journal: blocks come back in order after reopening, from where the reader asks', async (t) => {
  const dir = await t.tmp()
  const j = new Journal<Block>(dir)
  t.alike(await j.open(0), [], 'empty at first')
  for (let v = 0; v < 5; v++) t.is(await j.append({ v: v * 10 }), v, `block ${v} numbered in order`)
  await j.close()
  const again = new Journal<Block>(dir)
  const replay = await again.open(2)
  t.alike(
    replay.map((e) => [e.n, e.block.v]),
    [
      [2, 20],
      [3, 30],
      [4, 40],
    ],
  )
  t.is(again.length, 5)
  t.is(await again.append({ v: 50 }), 5, 'numbering continues')
  await again.close()
})

test('journal: a write cut off by a crash is dropped and cut away', async (t) => {
  const dir = await t.tmp()
  const j = new Journal<Block>(dir)
  await j.open(0)
  await j.append({ v: 1 })
  await j.append({ v: 2 })
  await j.close()
  const [file] = await readdir(dir)
  const path = join(dir, file as string)
  const whole = (await stat(path)).size
  // Half a frame: a header that promises more bytes than follow.
  await appendFile(path, Buffer.from([200, 0, 0, 0, 1, 2, 3, 4, 123, 34]))
  const again = new Journal<Block>(dir)
  const replay = await again.open(0)
  t.alike(
    replay.map((e) => e.block.v),
    [1, 2],
    'the whole blocks survive',
  )
  t.is((await stat(path)).size, whole, 'the torn tail is cut off')
  t.is(await again.append({ v: 3 }), 2)
  await again.close()
  t.alike(await reopened(dir), [1, 2, 3], 'and new blocks follow the whole ones')

  // A frame whose bytes were damaged fails its checksum: reading stops there.
  const buf = await readFile(path)
  buf[buf.length - 3] = (buf[buf.length - 3] as number) ^ 0xff
  await writeFile(path, buf)
  t.alike(await reopened(dir), [1, 2])
})

/** A frame as the journal lays it out, with the check given. */
function frame(payload: object, check: (b: Buffer) => number): Buffer {
  const body = Buffer.from(JSON.stringify(payload))
  const head = Buffer.alloc(8)
  head.writeUInt32LE(body.length, 0)
  head.writeUInt32LE(check(body), 4)
  return Buffer.concat([head, body])
}

test('journal: frames carry a CRC-32; a frame whose check fails ends what is read', async (t) => {
  const dir = await t.tmp()
  await mkdir(dir, { recursive: true })
  const j = new Journal<Block>(dir)
  await j.open(0)
  t.is(await j.append({ v: 1 }), 0)
  t.is(await j.append({ v: 2 }), 1)
  await j.close()
  const buf = await readFile(join(dir, '000000000000.log'))
  t.alike(buf, Buffer.concat([frame({ n: 0, v: 1 }, crc32), frame({ n: 1, v: 2 }, crc32)]), 'CRC-32 frames')
  // A frame with another check (here a SHA-256 prefix) is damaged: reading stops before it.
  const sha = (b: Buffer) => createHash('sha256').update(b).digest().readUInt32LE(0)
  await appendFile(join(dir, '000000000000.log'), frame({ n: 2, v: 3 }, sha))
  t.alike(await reopened(dir), [1, 2], 'the frame that fails its check is cut away')
  // A frame that passes its check but is not a block (no number): reading stops there too.
  await appendFile(join(dir, '000000000000.log'), frame({ v: 9 }, crc32))
  t.alike(await reopened(dir), [1, 2], 'a frame without a block number is not read')
})

test('journal: segments rotate, and released ones are deleted', async (t) => {
  const dir = await t.tmp()
  const j = new Journal<Block>(dir, { segmentBytes: 100 })
  await j.open(0)
  for (let v = 0; v < 20; v++) await j.append({ v })
  const files = (await readdir(dir)).sort()
  t.ok(files.length > 3, `${files.length} segments`)
  await j.release(12)
  const left = (await readdir(dir)).sort()
  t.ok(left.length < files.length, 'fully indexed segments are gone')
  await j.close()
  const again = new Journal<Block>(dir, { segmentBytes: 100 })
  const replay = await again.open(12)
  t.alike(
    replay.map((e) => e.block.v),
    [12, 13, 14, 15, 16, 17, 18, 19],
    'every block not yet released is still there',
  )
  t.is(again.length, 20)
  await again.release(20)
  t.is((await readdir(dir)).length, 1, 'the segment being written is never deleted')
  await again.close()
})
