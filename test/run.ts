/**
 * Runs every compiled test file (dist/test/**\/*.test.js) in its own brittle
 * process and prints `N passed, N failed` last. A file that crashes or prints
 * no brittle summary counts as one failure, so a silent crash can never pass.
 *
 * Files run in lanes (test/lanes.ts says which file goes where and why):
 * `shared` files two at a time (LLM_MESH_TEST_JOBS), the slowest first; then
 * the `alone` files (timing asserts a busy second core could break) one at a
 * time with nothing beside them. LLM_MESH_TEST_LANES=off runs every file one
 * at a time in path order, as before the lanes. A file's output is printed
 * whole when it ends, so two files' lines never mix.
 *
 *   node dist/test/run.js [path-like filter…]   e.g. test/integration/model-
 */
import { spawn } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { type Lane, laneOf, slowFirst } from './lanes.js'

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

/** Runs one file; its stdout and stderr are kept and printed whole when it ends. */
function runFile(file: string, lane: Lane): Promise<FileResult> {
  const started = Date.now()
  const name = relative(root, file)
  return new Promise((resolve) => {
    // brittle globs its arguments, which works with paths relative to the working folder only.
    const child = spawn(process.execPath, [brittle, relative(repo, file)], {
      cwd: repo,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString()
    })
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString()
    })
    const timer = setTimeout(() => {
      out += `\n# ${name} timed out after ${FILE_TIMEOUT_MS} ms: killed\n`
      child.kill('SIGKILL')
    }, FILE_TIMEOUT_MS)
    child.on('close', (code) => {
      clearTimeout(timer)
      const ms = Date.now() - started
      const summary = /# tests = (\d+)\/(\d+) pass/.exec(out)
      let r: FileResult = { passed: 0, failed: 1, ms }
      if (summary) {
        const passed = Number(summary[1])
        const total = Number(summary[2])
        // A file can report all tests passing and still exit non-zero (an error after the summary).
        r = { passed, failed: total - passed + (code !== 0 && total === passed ? 1 : 0), ms }
      }
      process.stdout.write(`\n# file ${name} (${lane})\n${out}`)
      if (err) process.stderr.write(err)
      process.stdout.write(
        `# file done in ${(ms / 1000).toFixed(1)} s: ${r.passed} passed, ${r.failed} failed\n`,
      )
      resolve(r)
    })
  })
}

const filter = process.argv.slice(2)
const files = findTests(root).filter((f) => filter.length === 0 || filter.some((p) => f.includes(p)))
const lanesOn = process.env.LLM_MESH_TEST_LANES !== 'off'
const jobs = lanesOn ? Math.max(1, Number(process.env.LLM_MESH_TEST_JOBS ?? 2) || 1) : 1
const inLane = (lane: Lane) => files.filter((f) => (lanesOn ? laneOf(relative(root, f)) : 'shared') === lane)
let passed = 0
let failed = 0
const failedFiles: string[] = []

/** Runs `queue` on `width` lanes, each taking the next file when its last one ends; resolves with a summary. */
async function runPool(queue: string[], lane: Lane, width: number): Promise<string> {
  const started = Date.now()
  const next = [...queue]
  const worker = async () => {
    for (let file = next.shift(); file !== undefined; file = next.shift()) {
      const r = await runFile(file, lane)
      passed += r.passed
      failed += r.failed
      if (r.failed) failedFiles.push(relative(root, file))
    }
  }
  await Promise.all(Array.from({ length: Math.min(width, queue.length) }, worker))
  return `${lane} ${queue.length} files (${width} at a time) in ${((Date.now() - started) / 1000).toFixed(0)} s`
}

const started = Date.now()
const shared = inLane('shared').map((f) => relative(root, f))
const ordered = lanesOn ? slowFirst(shared) : shared
const lanes = [
  await runPool(
    ordered.map((f) => join(root, f)),
    'shared',
    jobs,
  ),
]
lanes.push(await runPool(inLane('alone'), 'alone', 1))
process.stdout.write(
  `\n# lanes: ${lanes.join('; ')}; all in ${((Date.now() - started) / 1000).toFixed(0)} s\n`,
)
if (failedFiles.length) process.stdout.write(`\n# failed files: ${failedFiles.sort().join(', ')}\n`)
if (files.length === 0) {
  process.stdout.write('no test files found\n')
  failed++
}
process.stdout.write(`${passed} passed, ${failed} failed\n`)
process.exit(failed === 0 ? 0 : 1)
