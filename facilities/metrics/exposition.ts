/** One sample of a family: histograms name their `_bucket`, `_sum` and `_count` samples. */
export interface MetricSample {
  value: unknown
  labels?: Record<string, unknown>
  metricName?: string
}

/**
 * A metric family as prom-client's `Registry.getMetricsAsJSON()` gives it at run time (its
 * typings say `type` is a number; it is the type's name) and as it crosses RPC as JSON.
 */
export interface MetricFamily {
  name: string
  help: string
  type: string
  values: MetricSample[]
}

/** Families from one source, and the label value that names it. */
export interface LabelledFamilies {
  value: string
  families: MetricFamily[]
}

const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped'])
const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/

function escapeHelp(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')
}

/** A sample value as the text format writes it (JSON turned NaN and the infinities into null or strings). */
function formatValue(v: unknown): string {
  if (typeof v === 'number') {
    if (Number.isNaN(v)) return 'NaN'
    if (v === Number.POSITIVE_INFINITY) return '+Inf'
    if (v === Number.NEGATIVE_INFINITY) return '-Inf'
    return String(v)
  }
  if (v === '+Inf' || v === '-Inf') return v
  return 'NaN'
}

/**
 * Prometheus's text format for the families of several sources, each sample given the label
 * `label="<source's value>"`: one HELP and TYPE per family (the first source's), then every
 * source's samples. Families and samples that are not well formed (a peer's answer is data,
 * not trusted) are left out, as are samples that already carry `label`.
 */
export function exposeLabelled(label: string, sources: LabelledFamilies[]): string {
  const byName = new Map<string, { head: MetricFamily; lines: string[] }>()
  for (const { value, families } of sources) {
    const own = `${label}="${escapeLabel(value)}"`
    for (const family of families) {
      if (!isFamily(family)) continue
      let entry = byName.get(family.name)
      if (!entry) {
        entry = { head: family, lines: [] }
        byName.set(family.name, entry)
      }
      if (entry.head.type !== family.type) continue
      for (const sample of family.values) {
        const line = sampleLine(family.name, sample, label, own)
        if (line) entry.lines.push(line)
      }
    }
  }
  let out = ''
  for (const [name, { head, lines }] of byName) {
    if (lines.length === 0) continue
    out += `# HELP ${name} ${escapeHelp(String(head.help ?? ''))}\n# TYPE ${name} ${head.type}\n${lines.join('\n')}\n`
  }
  return out
}

function isFamily(f: unknown): f is MetricFamily {
  const m = f as MetricFamily
  return (
    typeof m === 'object' &&
    m !== null &&
    typeof m.name === 'string' &&
    NAME.test(m.name) &&
    TYPES.has(String(m.type)) &&
    Array.isArray(m.values)
  )
}

/** One sample's line, or null when it is malformed or already has `label`. */
function sampleLine(family: string, s: MetricSample, label: string, own: string): string | null {
  if (typeof s !== 'object' || s === null) return null
  const name = typeof s.metricName === 'string' ? s.metricName : family
  if (!NAME.test(name) || !name.startsWith(family)) return null
  const parts = [own]
  const labels = typeof s.labels === 'object' && s.labels !== null ? s.labels : {}
  for (const [k, v] of Object.entries(labels)) {
    if (k === label || !LABEL.test(k)) return null
    parts.push(`${k}="${escapeLabel(String(v))}"`)
  }
  return `${name}{${parts.join(',')}} ${formatValue(s.value)}`
}
