/** Prometheus's text format, read back: series (`name{a="x",b="y"}`) to values. */
export function parseProm(text: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const cut = line.lastIndexOf(' ')
    out.set(seriesKey(line.slice(0, cut)), Number(line.slice(cut + 1)))
  }
  return out
}

/** One series' key, its labels sorted, so a lookup need not know the exposition's order. */
function seriesKey(series: string): string {
  const open = series.indexOf('{')
  if (open < 0) return series
  const name = series.slice(0, open)
  const labels = [...series.slice(open + 1, -1).matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map(
    (m) => `${m[1]}="${m[2]}"`,
  )
  return `${name}{${labels.sort().join(',')}}`
}

/** The value of `name` with exactly `labels` (0 when absent: a counter not yet made). */
export function sample(
  series: Map<string, number>,
  name: string,
  labels: Record<string, string> = {},
): number {
  const keys = Object.keys(labels)
  const key =
    keys.length === 0
      ? name
      : `${name}{${keys
          .map((k) => `${k}="${labels[k]}"`)
          .sort()
          .join(',')}}`
  return series.get(key) ?? 0
}
