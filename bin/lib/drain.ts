import { MeshError } from '../../kernel/errors.js'
import { parse, WORKER_FLAGS } from './common.js'
import { CREDENTIAL_FLAGS } from './credentials.js'
import { withMeshClient } from './join.js'

/** `llm-mesh processor drain|undrain KEY`: maintenance mode, through a running gateway (admins). */

export const DRAIN_HELP = `Usage: llm-mesh processor drain KEY [--json]
       llm-mesh processor undrain KEY [--json]

'drain' puts a processor in maintenance: it finishes the generations it runs and the
gateways send it nothing new ('llm-mesh status' shows it draining, /readyz of the
processor says not ready); it stays up and reachable. 'undrain' brings it back.
KEY: the processor's public key in hex, or its first 8 hex digits at least ('llm-mesh
status' lists them). On the processor's machine, SIGUSR2 toggles the same
(kill -USR2 PID), and 'llm-mesh processor --drain' starts it drained.
Admin commands, signed in as for 'user' (--data DIR, or --bootstrap with --api-key / --user).`

export async function commandProcessorDrain(args: string[], draining: boolean): Promise<number> {
  const { values, positionals } = parse(
    args,
    { ...WORKER_FLAGS, ...CREDENTIAL_FLAGS, user: { type: 'string' }, json: { type: 'boolean' } },
    true,
  )
  if (values.help) {
    process.stdout.write(`${DRAIN_HELP}\n`)
    return 0
  }
  const key = positionals[0]
  if (!key || positionals.length > 1) {
    throw MeshError.badRequest(`usage: llm-mesh processor ${draining ? 'drain' : 'undrain'} KEY`)
  }
  const reply = await withMeshClient(values, (client) => client.drainProcessor(key, draining))
  if (values.json) process.stdout.write(`${JSON.stringify(reply, null, 2)}\n`)
  else {
    const what = reply.draining
      ? `draining: it finishes ${reply.active} running generation${reply.active === 1 ? '' : 's'} and takes nothing new`
      : 'serving again'
    process.stdout.write(`processor ${reply.processor} ${what}\n`)
  }
  return 0
}
