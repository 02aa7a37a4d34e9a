import type { HostPort } from 'hyperdht'
import { z } from 'zod'

/** The DHT bootstrap of a worker: `public`, or host:port nodes, and whether they are all on this machine. */

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|localhost|::1)$/

const hostPort = z.string().transform((s, ctx): HostPort => {
  const m = /^(.+):(\d{1,5})$/.exec(s.trim())
  const port = m ? Number(m[2]) : Number.NaN
  if (!m || port < 1 || port > 65535) {
    ctx.addIssue({ code: 'custom', message: `'${s}' is not host:port` })
    return z.NEVER
  }
  return { host: m[1] === 'localhost' ? '127.0.0.1' : (m[1] as string), port }
})

const hostPortList = z.array(hostPort).min(1, 'needs at least one host:port (or "public")')

/** `public`, or a non-empty list of host:port. There is deliberately no default. */
export const bootstrapSchema = z.unknown().transform((v, ctx): 'public' | HostPort[] => {
  if (v === 'public') return 'public'
  if (v === undefined || v === null || v === '') {
    ctx.addIssue({
      code: 'custom',
      message: 'required: a list of "host:port" DHT bootstrap nodes, or "public" for the public HyperDHT',
    })
    return z.NEVER
  }
  const list = hostPortList.safeParse(typeof v === 'string' ? parseBootstrapList(v) : v)
  if (list.success) return list.data
  for (const issue of list.error.issues)
    ctx.addIssue({ code: 'custom', message: issue.message, path: issue.path })
  return z.NEVER
})

/** `public` or comma/space separated host:port, as in LLM_MESH_BOOTSTRAP and --bootstrap. */
export function parseBootstrapList(value: string): string | string[] {
  const v = value.trim()
  if (v === 'public') return 'public'
  return v.split(/[\s,]+/).filter(Boolean)
}

export function isLoopbackBootstrap(bootstrap: 'public' | HostPort[]): boolean {
  return bootstrap !== 'public' && bootstrap.every((b) => LOOPBACK.test(b.host))
}
