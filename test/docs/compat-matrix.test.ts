/**
 * The compatibility matrix in docs/http-api.md matches the tests: every cell that is not `—`
 * links at least one test, every link is defined, and every defined link is a test file that
 * exists and holds tests.
 */
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import test from 'brittle'

const DOC = fileURLToPath(new URL('../../../docs/http-api.md', import.meta.url))
const COLUMNS = ['Ollama API', 'OpenAI chat', 'Responses', 'Messages', 'llama.cpp backend', 'Ollama backend']

/** The matrix's section: from its heading to the next one. */
function section(text: string): string {
  const start = text.indexOf('\n## Compatibility matrix\n')
  if (start < 0) return ''
  const next = text.indexOf('\n## ', start + 1)
  return text.slice(start, next < 0 ? undefined : next)
}

const cellsOf = (row: string) =>
  row
    .trim()
    .replace(/^\||\|$/g, '')
    .split('|')
    .map((c) => c.trim())

test('compat matrix: every supported or refused cell names a test that exists', (t) => {
  const text = section(readFileSync(DOC, 'utf8'))
  t.ok(text.length > 0, 'docs/http-api.md has a "Compatibility matrix" section')
  const rows = text.split('\n').filter((l) => l.startsWith('|'))
  const [header, rule, ...body] = rows
  t.alike(cellsOf(header ?? '').slice(1), COLUMNS, 'the columns: four dialects, two backends')
  t.ok(rule?.includes('---'), 'a table')
  t.ok(body.length >= 15, `${body.length} rows`)

  const defined = new Map<string, string>()
  for (const m of text.matchAll(/^\[([^\]]+)\]: (\S+)$/gm)) defined.set(m[1] as string, m[2] as string)
  const used = new Set<string>()
  for (const row of body) {
    const [what, ...cells] = cellsOf(row)
    t.is(cells.length, COLUMNS.length, `${what}: a cell per column`)
    cells.forEach((cell, i) => {
      const refs = [...cell.matchAll(/\[([^\]]+)\](?!\()/g)].map((m) => m[1] as string)
      for (const r of refs) used.add(r)
      if (cell === '—' || cell.startsWith('— (')) return
      t.ok(refs.length > 0, `${what} × ${COLUMNS[i]}: names a test`)
      for (const r of refs) t.ok(defined.has(r), `${what} × ${COLUMNS[i]}: [${r}] is defined`)
    })
  }
  for (const m of text.matchAll(/(?<!^)\[([^\]]+)\](?![(:])/gm)) used.add(m[1] as string)
  for (const [label, path] of defined) {
    const file = join(dirname(DOC), path)
    t.ok(path.endsWith('.test.ts') && existsSync(file), `[${label}] is a test file: ${path}`)
    if (existsSync(file)) t.ok(/^test\(/m.test(readFileSync(file, 'utf8')), `[${label}] holds tests`)
    t.ok(used.has(label), `[${label}] is used`)
  }
})
