import { basename, dirname, extname, resolve } from 'node:path'
import { writeTinyModel } from '../../facilities/tiny-model/tiny-model.js'
import { MeshError } from '../../kernel/errors.js'
import { int, parse } from './common.js'
import { commandModelLs, commandModelOp, isModelOp } from './model-admin.js'
import { commandModelReplicas } from './model-desired.js'
import { commandModelPull } from './model-pull.js'

export const MODEL_HELP = `Usage: llm-mesh model tiny <path.gguf> [--step N] [--loop]
       llm-mesh model ls [--json]   (the models of the mesh: see 'model ls --help')
       llm-mesh model rm|cp|load|unload …   (admins: see 'model rm --help')
       llm-mesh model pull NAME [--from URL] …   (admins: see 'model pull --help')
       llm-mesh model replicas NAME N [--loaded M]   (admins: desired state, see 'model replicas --help')

Writes the tiny test model: a ~4 MB llama GGUF with hand-set weights, NOT a real LLM.
Greedy output continues letters: 'abc' → 'defghijklmnopqrstuvwxyz'. A processor serves
it under its file name: models/tiny.gguf is the model 'tiny'.
  --step N   letters advance by N (default 1): 'abc' → 'egikmoqsuwy' with 2
  --loop     'z' wraps to 'a': output never ends by itself (num_predict bounds it)`

const GGUF = '.gguf'

/** `llm-mesh model tiny PATH`: writes the tiny test model where a processor will find it. */
export async function commandModel(args: string[]): Promise<number> {
  if (args[0] === 'ls') return commandModelLs(args.slice(1))
  if (isModelOp(args[0])) return commandModelOp(args[0] as string, args.slice(1))
  if (args[0] === 'pull') return commandModelPull(args.slice(1))
  if (args[0] === 'replicas') return commandModelReplicas(args.slice(1))
  const { values, positionals } = parse(
    args,
    { step: { type: 'string' }, loop: { type: 'boolean' }, help: { type: 'boolean' } },
    true,
  )
  if (values.help || positionals[0] !== 'tiny' || !positionals[1]) {
    process.stdout.write(`${MODEL_HELP}\n`)
    return values.help ? 0 : 2
  }
  const path = resolve(positionals[1])
  // A processor lists the *.gguf files of its folder, each under its file name without `.gguf`.
  const name = basename(path, GGUF)
  if (extname(path) !== GGUF || name === '' || name.startsWith('.')) {
    throw MeshError.badRequest(
      `${path}: the file name must be NAME.gguf (a processor serves each NAME.gguf of its --models folder as model NAME)`,
    )
  }
  const step = int(values.step, 'step') ?? 1
  await writeTinyModel(path, { step, loop: values.loop === true })
  process.stdout.write(
    `wrote ${path}: the tiny test model (not a real LLM); a processor with --models ${dirname(path)} serves it as '${name}'\n`,
  )
  return 0
}
