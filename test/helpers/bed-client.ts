/**
 * A MeshClient in a process of its own, for tests whose client must run on another host (a
 * network namespace of test/helpers/netns.ts). Started with its config as JSON in argv[2] and
 * a username/password in LLM_MESH_USER / LLM_MESH_PASSWORD; logs in, says `{ type: 'ready' }`
 * over IPC, then answers `{ id, op, ... }` messages with `{ id, ok, ... }` or `{ id, error, code }`
 * until its parent goes.
 *
 *   { op: 'chat', model, content, timeoutMs? }  → { text, pieces, processor, ms }  (streamed)
 *   { op: 'status' }                           → { status }  (the gateway's `status`)
 */
import { MeshError } from '../../kernel/errors.js'
import { MeshClient } from '../../workers/client/client.worker.js'

type Op =
  | { id: number; op: 'chat'; model: string; content: string; timeoutMs?: number }
  | { id: number; op: 'status' }

const client = new MeshClient({ config: JSON.parse(process.argv[2] ?? '{}') })

async function chat(model: string, content: string, timeoutMs = 30_000) {
  const started = Date.now()
  const stream = client.chat({
    model,
    messages: [{ role: 'user', content }],
    options: { temperature: 0 },
    stream: true,
    timeoutMs,
  })
  const pieces: string[] = []
  let processor: string | undefined
  for await (const part of stream) {
    if (part.done) processor = part.result.processor
    else pieces.push(part.text)
  }
  return { text: pieces.join(''), pieces: pieces.length, processor, ms: Date.now() - started }
}

async function answer(msg: Op): Promise<Record<string, unknown>> {
  if (msg.op === 'chat') return chat(msg.model, msg.content, msg.timeoutMs)
  return { status: await client.status() }
}

process.on('message', (msg: Op) => {
  answer(msg).then(
    (out) => process.send?.({ id: msg.id, ok: true, ...out }),
    (err: unknown) =>
      process.send?.({
        id: msg.id,
        ok: false,
        error: (err as Error).message,
        code: err instanceof MeshError ? err.code : 'ERR_INTERNAL',
      }),
  )
})
process.once('disconnect', () => {
  void client.close().finally(() => process.exit(0))
})

await client.ready()
await client.login(process.env.LLM_MESH_USER ?? 'admin', process.env.LLM_MESH_PASSWORD ?? '')
process.send?.({ type: 'ready' })
