/**
 * `llm-mesh model pull NAME [--from URL] [--digest sha256:HEX] [--to KEY]... [--all] [--replicas N] [--json]`:
 * pulls a model onto processors through a running gateway (admins). A progress bar per
 * processor on a terminal (cli-progress), one JSON line per progress frame and a last
 * `{"done": …}` line with `--json`, plain lines otherwise. Exit 0 when every processor has
 * the model, 1 when any failed.
 */
import cliProgress from 'cli-progress'
import { MeshError } from '../../kernel/errors.js'
import type { ModelPullRequest, PullSummary, TaggedProgress } from '../../workers/client/model-pull.js'
import { MAX_TARGETS } from '../../workers/gateway/model-pull.js'
import { int, type Options, parse, WORKER_FLAGS } from './common.js'
import { CREDENTIAL_FLAGS } from './credentials.js'
import { withMeshClient } from './join.js'

export const MODEL_PULL_HELP = `Usage: llm-mesh model pull NAME [--from URL] [--digest sha256:HEX] [--to KEY]... [--all] [--replicas N] [--json]

Pulls model NAME onto processors, through a running gateway (admins only).
  --from URL     llama.cpp processors download the GGUF from URL (http(s)://…, or an
                 hf:USER/REPO:QUANT reference), resumably: a pull stopped midway goes on
                 from where it was the next time. The file is served only once it parses
                 as GGUF and (with --digest) its sha256 matches.
                 Without --from, Ollama processors pull NAME with Ollama's own pull, and
                 llama.cpp processors copy it from a processor of the mesh that holds it:
                 every block verified, then the file's sha256; a copy stopped midway
                 resumes from the blocks it has.
  --digest D     the GGUF's expected sha256 (sha256:HEX or HEX); a different file is refused.
  --to KEY       a processor (public key in hex, or its first 8 hex digits at least;
                 'llm-mesh status' lists them); repeat for more.
  --all          every live processor that can (llama.cpp ones with --from; without it,
                 Ollama ones and llama.cpp ones that lack a model some processor holds);
                 the default when no --to is given.
  --replicas N   copy NAME from the mesh onto enough llama.cpp processors (live, not
                 draining, without it) that N hold it; fewer if fewer can (said so).
                 Not with --to, --all or --from.
  --json         one JSON line per progress frame, then {"done": {model, results}}.
Admin commands, signed in as for 'user' (--data DIR, or --bootstrap with --api-key / --user).`

/** Where the command writes: stdout for results, stderr for progress bars. */
export interface PullOutput {
  out: (text: string) => void
  /** A terminal to draw bars on, or null for plain lines. */
  tty: NodeJS.WritableStream | null
  json: boolean
}

/** The request the flags ask for. @throws ERR_BAD_REQUEST */
export function pullRequestFromArgs(args: string[]): {
  req: ModelPullRequest
  json: boolean
  help: boolean
  values: Record<string, string | boolean | undefined>
} {
  const { values, positionals } = parse(args, { ...WORKER_FLAGS, ...CREDENTIAL_FLAGS, ...PULL_FLAGS }, true)
  const help = values.help === true
  const model = positionals[0]
  if (!help && (!model || positionals.length > 1))
    throw MeshError.badRequest('usage: llm-mesh model pull NAME')
  const to = values.to as unknown as string[] | undefined
  if (to && values.all) throw MeshError.badRequest('--to and --all: one or the other')
  const req: ModelPullRequest = { model: model ?? '' }
  if (values.replicas !== undefined) {
    const n = int(values.replicas, '--replicas', 1, MAX_TARGETS) as number
    if (to || values.all || values.from !== undefined)
      throw MeshError.badRequest('--replicas: not with --to, --all or --from')
    req.replicas = n
  } else req.to = to ?? 'all'
  if (typeof values.from === 'string') req.source = values.from
  if (typeof values.digest === 'string') req.digest = values.digest
  return { req, json: values.json === true, help, values }
}

const PULL_FLAGS: Options = {
  user: { type: 'string' },
  json: { type: 'boolean' },
  from: { type: 'string' },
  digest: { type: 'string' },
  to: { type: 'string', multiple: true },
  all: { type: 'boolean' },
  replicas: { type: 'string' },
}

const short = (key: string) => key.slice(0, 12)

/** A progress bar per processor, made on its first frame with a byte total. */
function barsOn(tty: NodeJS.WritableStream) {
  const multi = new cliProgress.MultiBar(
    {
      stream: tty,
      format: '{processor} [{bar}] {percentage}% {value}/{total} bytes  {status}',
      hideCursor: true,
      clearOnComplete: false,
      etaBuffer: 20,
      // Drawn only on a terminal (the caller's choice), so this just lets tests draw on a pipe.
      noTTYOutput: true,
    },
    cliProgress.Presets.shades_classic,
  )
  const bars = new Map<string, cliProgress.SingleBar>()
  return {
    frame(p: TaggedProgress): void {
      let bar = bars.get(p.processor)
      const total = p.total ?? 0
      if (!bar) {
        bar = multi.create(Math.max(total, 1), 0, { processor: short(p.processor), status: p.status })
        bars.set(p.processor, bar)
      }
      if (total > 0) bar.setTotal(total)
      // A frame without counts (a new status, 'success') keeps the bar where it was.
      if (p.completed === undefined) bar.update({ status: p.status })
      else bar.update(p.completed, { status: p.status })
    },
    stop: () => multi.stop(),
  }
}

/** One processor's outcome, as a line: pulled, copied (from whom, bytes over the wire), or failed. */
function outcomeLine(r: PullSummary['results'][number]): string {
  if (!r.ok) return `${short(r.processor)}  failed: ${r.error.code} ${r.error.message}`
  const what = `${r.model}${r.digest ? ` ${r.digest}` : ''}${r.size ? ` (${r.size} bytes)` : ''}`
  if (r.from === undefined) return `${short(r.processor)}  pulled ${what}`
  return `${short(r.processor)}  copied ${what} from ${short(r.from)}, ${r.wireBytes ?? 0} bytes over the wire`
}

/** Renders a pull's progress and outcome; the exit code: 0 when every processor has the model. */
export async function renderPull(
  progress: AsyncIterable<TaggedProgress>,
  result: Promise<PullSummary>,
  o: PullOutput,
): Promise<number> {
  const bars = o.tty && !o.json ? barsOn(o.tty) : null
  const lastStatus = new Map<string, string>()
  try {
    for await (const p of progress) {
      if (o.json) o.out(`${JSON.stringify(p)}\n`)
      else if (bars) bars.frame(p)
      else if (lastStatus.get(p.processor) !== p.status) {
        lastStatus.set(p.processor, p.status)
        o.out(`${short(p.processor)}  ${p.status}${p.total ? ` (${p.total} bytes)` : ''}\n`)
      }
    }
  } finally {
    bars?.stop()
  }
  const summary = await result
  if (o.json) o.out(`${JSON.stringify({ done: summary })}\n`)
  else {
    for (const r of summary.results) o.out(`${outcomeLine(r)}\n`)
    if (summary.note) o.out(`${summary.note}\n`)
  }
  return summary.results.every((r) => r.ok) ? 0 : 1
}

/** `llm-mesh model pull …` (see MODEL_PULL_HELP). */
export async function commandModelPull(args: string[]): Promise<number> {
  const { req, json, help, values } = pullRequestFromArgs(args)
  if (help) {
    process.stdout.write(`${MODEL_PULL_HELP}\n`)
    return 0
  }
  return withMeshClient(values, (client) => {
    const run = client.pullModel(req)
    const stop = () => run.abort()
    process.once('SIGINT', stop)
    return renderPull(run, run.result, {
      out: (text) => process.stdout.write(text),
      tty: process.stderr.isTTY ? process.stderr : null,
      json,
    }).finally(() => process.off('SIGINT', stop))
  })
}
