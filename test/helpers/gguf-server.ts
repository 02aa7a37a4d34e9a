/**
 * A loopback HTTP file server for pull tests: serves named buffers with HEAD
 * and single-range GET (what resumable downloaders use), counts the body bytes
 * it sent, and can pace its output so a test can stop a transfer midway.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Test } from 'brittle'

export interface FileServer {
  /** The URL of a served file. */
  url(name: string): string
  /** Body bytes sent so far (all files, all requests). */
  readonly bytesSent: number
  /** Range headers asked for, in order. */
  readonly ranges: string[]
}

export interface FileServerOptions {
  /** Send at most this many bytes per tick (default: all at once). */
  chunk?: number
  /** Milliseconds between paced chunks. */
  tickMs?: number
}

function rangeOf(header: string | undefined, size: number): { start: number; end: number } | null {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header ?? '')
  if (!m) return null
  const start = m[1] === '' ? size - Number(m[2]) : Number(m[1])
  const end = m[1] !== '' && m[2] !== '' ? Math.min(Number(m[2]), size - 1) : size - 1
  return start >= 0 && start <= end ? { start, end } : null
}

/** Starts a server over `files` (name → content), closed on teardown. */
export async function serveFiles(
  t: Test,
  files: Record<string, Buffer>,
  opts: FileServerOptions = {},
): Promise<FileServer> {
  const state = { bytesSent: 0, ranges: [] as string[] }
  const send = (res: ServerResponse, body: Buffer) => {
    const chunk = opts.chunk ?? body.length
    let at = 0
    const next = () => {
      if (res.destroyed) return
      const piece = body.subarray(at, at + chunk)
      at += piece.length
      state.bytesSent += piece.length
      if (at >= body.length) res.end(piece)
      else res.write(piece, () => setTimeout(next, opts.tickMs ?? 0))
    }
    next()
  }
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const body = files[decodeURIComponent((req.url ?? '/').slice(1))]
    if (!body) {
      res.writeHead(404).end('not found')
      return
    }
    const range = req.headers.range ? rangeOf(req.headers.range, body.length) : null
    if (req.headers.range) state.ranges.push(req.headers.range)
    const part = range ? body.subarray(range.start, range.end + 1) : body
    const headers: Record<string, string | number> = {
      'content-type': 'application/octet-stream',
      'accept-ranges': 'bytes',
      'content-length': part.length,
    }
    if (range) headers['content-range'] = `bytes ${range.start}-${range.end}/${body.length}`
    res.writeHead(range ? 206 : 200, headers)
    if (req.method === 'HEAD') res.end()
    else send(res, part)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  )
  const { port } = server.address() as AddressInfo
  return {
    url: (name) => `http://127.0.0.1:${port}/${encodeURIComponent(name)}`,
    get bytesSent() {
      return state.bytesSent
    },
    get ranges() {
      return state.ranges
    },
  }
}
