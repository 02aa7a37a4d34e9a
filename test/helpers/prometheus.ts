import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { accessSync, constants } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { delimiter, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import test, { type Test } from 'brittle'
import { closedPort, type T, until } from './mesh.js'

/** The repository's root (tests run from dist/test/…). */
export const REPO = fileURLToPath(new URL('../../../', import.meta.url))

/** `name`'s path on $PATH, or null. */
export function onPath(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue
    const path = join(dir, name)
    try {
      accessSync(path, constants.X_OK)
      return path
    } catch {}
  }
  return null
}

/** Why Prometheus's binaries cannot be used here, or null when both are on $PATH. */
export function prometheusMissing(): string | null {
  const missing = ['prometheus', 'promtool'].filter((b) => onPath(b) === null)
  if (missing.length === 0) return null
  return `${missing.join(' and ')} not on PATH (Debian: apt-get install prometheus)`
}

/**
 * A test that needs `prometheus`/`promtool`: skipped, with a line saying why, when they are
 * missing — except under CI (`LLM_MESH_REQUIRE_PROMETHEUS=1`, set by .ci/run), where a missing
 * binary is a failure.
 */
export function prometheusTest(
  name: string,
  opts: { timeout: number },
  fn: (t: Test) => Promise<void>,
): void {
  const missing = prometheusMissing()
  const required = process.env.LLM_MESH_REQUIRE_PROMETHEUS === '1'
  if (missing && !required) console.log(`# ${name}: skipped: ${missing}`)
  if (missing && required) {
    test(`${name} (LLM_MESH_REQUIRE_PROMETHEUS=1)`, (t) => t.fail(missing))
    return
  }
  test(name, { ...opts, skip: missing !== null }, fn)
}

export interface ToolRun {
  status: number | null
  stdout: string
  stderr: string
}

/** `promtool ARGS` with `input` on stdin, bounded to 30 s. */
export function promtool(args: string[], input = ''): ToolRun {
  const r = spawnSync('promtool', args, { input, encoding: 'utf8', timeout: 30_000 })
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' }
}

/** An assertion message: `what`, and the tool's output when it failed. */
export function said(what: string, run: ToolRun): string {
  return run.status === 0 ? what : `${what} (exit ${run.status}):\n${run.stdout}${run.stderr}`
}

export interface RunningPrometheus {
  url: string
  child: ChildProcess
  /** GET `path` (with `params`) on its HTTP API; the `data` of a success, else throws. */
  api<R = unknown>(path: string, params?: Record<string, string>): Promise<R>
  /** What it printed (its log), for a failure's message. */
  log(): string
}

/**
 * A real Prometheus server on 127.0.0.1 with `config` (YAML text) and a fresh TSDB in a temp
 * folder, resolved once `/-/ready` answers. Killed in teardown, and when this process exits.
 */
export async function startPrometheus(t: T, config: string): Promise<RunningPrometheus> {
  const dir = await t.tmp()
  const file = join(dir, 'prometheus.yml')
  await writeFile(file, config)
  const port = await closedPort()
  const child = spawn(
    'prometheus',
    [
      `--config.file=${file}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  let out = ''
  const keep = (d: Buffer) => {
    out = (out + d.toString()).slice(-20_000)
  }
  child.stdout?.on('data', keep)
  child.stderr?.on('data', keep)
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const killNow = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }
  process.once('exit', killNow)
  t.teardown(
    async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
      const timer = setTimeout(killNow, 5_000)
      await exited
      clearTimeout(timer)
      process.off('exit', killNow)
    },
    { order: 0 },
  )
  const url = `http://127.0.0.1:${port}`
  const ready = await until(
    async () => child.exitCode === null && (await fetch(`${url}/-/ready`).catch(() => null))?.status === 200,
    15_000,
    100,
  )
  if (!ready) throw new Error(`prometheus did not become ready (exit ${child.exitCode}):\n${out}`)
  return {
    url,
    child,
    log: () => out,
    async api<R>(path: string, params: Record<string, string> = {}): Promise<R> {
      const res = await fetch(`${url}${path}?${new URLSearchParams(params)}`)
      const body = (await res.json()) as { status: string; data: R; error?: string }
      if (body.status !== 'success') throw new Error(`${path}: ${body.error ?? res.status}`)
      return body.data
    },
  }
}

/**
 * The metric names PromQL `expr` reads: what is left once strings, label matchers, ranges,
 * grouping clauses, Grafana variables, numbers, keywords and function calls are taken out.
 */
export function metricNamesIn(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, ' ')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\b(?:group_left|group_right)\b/g, ' ')
    .replace(/\$\{?\w+\}?/g, ' ')
    .replace(/\boffset\s+\d+\w*/g, ' ')
  const names = new Set<string>()
  for (const m of bare.matchAll(/(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?/g)) {
    if (m[2] || PROMQL_KEYWORDS.has(m[1] as string)) continue
    names.add(m[1] as string)
  }
  return [...names]
}

const PROMQL_KEYWORDS = new Set(['by', 'without', 'and', 'or', 'unless', 'bool', 'offset', 'inf', 'nan'])

/**
 * Every metric name a `/metrics` text exposes (from its `# TYPE` lines, so a labelled series
 * with no sample yet counts too): a histogram's `_bucket`, `_sum` and `_count`, a summary's
 * `_sum` and `_count` beside its own name.
 */
export function exposedNames(text: string): Set<string> {
  const names = new Set<string>()
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [, name, type] = m as unknown as [string, string, string]
    if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(name + s)
    else if (type === 'summary') for (const s of ['', '_sum', '_count']) names.add(name + s)
    else names.add(name)
  }
  return names
}

/** A PromQL expression found in a file, and where (for a failure's message). */
export interface FoundQuery {
  where: string
  expr: string
}

/** Every query of a Grafana dashboard: panels' targets and query variables (`label_values(…)`'s series). */
export function dashboardQueries(dashboard: unknown): FoundQuery[] {
  const out: FoundQuery[] = []
  const walk = (node: unknown, where: string) => {
    if (Array.isArray(node)) {
      for (const [i, n] of node.entries()) walk(n, `${where}[${i}]`)
      return
    }
    if (node === null || typeof node !== 'object') return
    for (const [key, value] of Object.entries(node)) {
      const at = `${where}.${key}`
      if (key === 'expr' && typeof value === 'string') out.push({ where: at, expr: value })
      else if (key === 'definition' && typeof value === 'string') {
        const lv = /^label_values\((.*),\s*\w+\)$/.exec(value.trim())
        out.push({ where: at, expr: lv ? (lv[1] as string) : value })
      } else walk(value, at)
    }
  }
  walk(dashboard, 'dashboard')
  return out
}

/** Every `expr:` of a Prometheus rule file (one line, or a `|`/`>` block below it). */
export function ruleExprs(yaml: string): FoundQuery[] {
  const out: FoundQuery[] = []
  const lines = yaml.split('\n')
  lines.forEach((line, i) => {
    const m = /^(\s*)(?:- )?expr:\s*(.*)$/.exec(line)
    if (!m) return
    const indent = (m[1] as string).length
    let expr = m[2] as string
    if (/^[|>][-+]?$/.test(expr)) {
      expr = ''
      for (let j = i + 1; j < lines.length; j++) {
        const next = lines[j] as string
        if (next.trim() !== '' && next.length - next.trimStart().length <= indent) break
        expr += `${next.trim()} `
      }
    }
    out.push({ where: `line ${i + 1}`, expr: expr.trim() })
  })
  return out
}
