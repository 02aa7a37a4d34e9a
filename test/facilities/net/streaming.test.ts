import test from 'brittle'
import { ChunkWriter, type StreamChunk } from '../../../facilities/net/streaming.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

test('chunk writer: first piece at once, later pieces coalesced within the window', async (t) => {
  const sent: StreamChunk[] = []
  const w = new ChunkWriter((c) => sent.push(c), 's1', 50)
  w.write('a')
  t.alike(sent, [{ id: 's1', seq: 0, text: 'a' }], 'the first piece is not delayed')
  w.write('b')
  w.write('')
  w.write('c')
  t.is(sent.length, 1, 'pieces inside the window wait')
  await sleep(80)
  t.alike(sent[1], { id: 's1', seq: 1, text: 'bc' }, 'sent together when the window ends')
  w.write('d')
  t.is(sent.length, 2, 'the next piece starts a new window only once the last send is older than it')
  w.flush()
  t.alike(sent[2], { id: 's1', seq: 2, text: 'd' }, 'flush sends what is pending at once')
  w.flush()
  t.is(sent.length, 3, 'flush with nothing pending sends nothing')
  t.is(w.sent, 3)
  await sleep(80)
  t.is(sent.length, 3, 'no timer left behind after flush')
  t.is(sent.map((c) => c.text).join(''), 'abcd', 'no text lost or reordered')
})

test('chunk writer: window 0 sends one chunk per piece', (t) => {
  const sent: StreamChunk[] = []
  const w = new ChunkWriter((c) => sent.push(c), 's2', 0)
  for (const ch of 'hello') w.write(ch)
  t.alike(
    sent.map((c) => [c.seq, c.text]),
    [
      [0, 'h'],
      [1, 'e'],
      [2, 'l'],
      [3, 'l'],
      [4, 'o'],
    ],
  )
})

test('chunk writer: text and reasoning pending before a tool call go ahead of it, in a chunk of their own', (t) => {
  const sent: StreamChunk[] = []
  const w = new ChunkWriter((c) => sent.push(c), 's3', 1000)
  const call = { id: 'c1', name: 'look', arguments: {} }
  w.write('hi')
  w.writeDelta({ thinking: 'hmm' })
  w.write(' let me check')
  w.writeDelta({ toolCalls: [call] })
  t.alike(sent, [
    { id: 's3', seq: 0, text: 'hi' },
    { id: 's3', seq: 1, text: ' let me check', thinking: 'hmm' },
    { id: 's3', seq: 2, text: '', toolCalls: [call] },
  ])
  w.writeDelta({ toolCalls: [{ ...call, id: 'c2' }] })
  t.alike(
    sent[3],
    { id: 's3', seq: 3, text: '', toolCalls: [{ ...call, id: 'c2' }] },
    'a call with nothing pending goes alone',
  )
  w.flush()
  t.is(sent.length, 4, 'nothing left behind')
})

test('chunk writer: reasoning after pending text sends the text first (a chunk puts its reasoning ahead of its text)', (t) => {
  const sent: StreamChunk[] = []
  const w = new ChunkWriter((c) => sent.push(c), 's4', 1000)
  w.write('a')
  w.write('b')
  w.writeDelta({ thinking: 't' })
  w.write('c')
  w.flush()
  t.alike(sent, [
    { id: 's4', seq: 0, text: 'a' },
    { id: 's4', seq: 1, text: 'b' },
    { id: 's4', seq: 2, text: 'c', thinking: 't' },
  ])
})
