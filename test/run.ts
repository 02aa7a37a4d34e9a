/**
 * Runs every compiled test file (dist/test/**\/*.test.js) in its own brittle
 * process, one after another (2 cores; llama.cpp tests want one each), and
 * prints `N passed, N failed` last. A file that crashes or prints no brittle
 * summary counts as one failure, so a silent crash can never pass.
 */
import { spawn } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const FILE_TIMEOUT_MS = 5 * 60_000
const root = fileURLToPath(new URL('.', import.meta.url))
const repo = fileURLToPath(new URL('../../', import.meta.url))
const brittle = fileURLToPath(new URL('../../node_modules/brittle/brittle-node.js', import.meta.url))

function findTests(dir: string): string[] {
  const out: string[] = []
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) out.push(...findTests(path))
    else if (entry.name.endsWith('.test.js')) out.push(path)
  }
  return out.sort()
}

interface FileResult {
  passed: number
  failed: number
  ms: number
}

function runFile(file: string): Promise<FileResult> {
  const started = Date.now()
  return new Promise((resolve) => {
    // brittle globs its arguments, which works with paths relative to the working folder only.
    const child = spawn(process.execPath, [brittle, relative(repo, file)], {
      cwd: repo,
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    let out = ''
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString()
      process.stdout.write(d)
    })
    const timer = setTimeout(() => {
      process.stdout.write(`\n# ${relative(root, file)} timed out after ${FILE_TIMEOUT_MS} ms: killed\n`)
      child.kill('SIGKILL')
    }, FILE_TIMEOUT_MS)
    child.on('close', (code) => {
      clearTimeout(timer)
      const ms = Date.now() - started
      const summary = /# tests = (\d+)\/(\d+) pass/.exec(out)
      if (!summary) return resolve({ passed: 0, failed: 1, ms })
      const passed = Number(summary[1])
      const total = Number(summary[2])
      // A file can report all tests passing and still exit non-zero (an error after the summary).
      const failed = total - passed + (code !== 0 && total === passed ? 1 : 0)
      resolve({ passed, failed, ms })
    })
  })
}

const filter = process.argv.slice(2)
const files = findTests(root).filter((f) => filter.length === 0 || filter.some((p) => f.includes(p)))
let passed = 0
let failed = 0
const failedFiles: string[] = []
for (const file of files) {
  process.stdout.write(`\n# file ${relative(root, file)}\n`)
  const r = await runFile(file)
  passed += r.passed
  failed += r.failed
  if (r.failed) failedFiles.push(relative(root, file))
  process.stdout.write(
    `# file done in ${(r.ms / 1000).toFixed(1)} s: ${r.passed} passed, ${r.failed} failed\n`,
  )
}
if (failedFiles.length) process.stdout.write(`\n# failed files: ${failedFiles.join(', ')}\n`)
if (files.length === 0) {
  process.stdout.write('no test files found\n')
  failed++
}
process.stdout.write(`${passed} passed, ${failed} failed\n`)
process.exit(failed === 0 ? 0 : 1)
