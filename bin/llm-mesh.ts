#!/usr/bin/env node
import { join, resolve } from 'node:path'
import { type ConfigInput, gatewayConfigSchema, processorConfigSchema } from '../kernel/config.js'
import { deepMerge, loadConfig } from '../kernel/config-load.js'
import { MeshError } from '../kernel/errors.js'
import { VERSION } from '../kernel/version.js'
import { GatewayWorker } from '../workers/gateway/gateway.worker.js'
import { ProcessorWorker } from '../workers/processor/processor.worker.js'
import { commandKey, commandUsage, commandUser, KEY_HELP, USAGE_HELP, USER_HELP } from './lib/accounts.js'
import { firstAdmin } from './lib/admin.js'
import { AUDIT_HELP, commandAudit } from './lib/audit.js'
import { BOOTSTRAP_HELP, commandBootstrap } from './lib/bootstrap.js'
import { runChat } from './lib/chat.js'
import {
  dataDir,
  dataMesh,
  int,
  parse,
  str,
  WORKER_FLAGS,
  waitForSignal,
  workerOverrides,
} from './lib/common.js'
import { CREDENTIAL_FLAGS } from './lib/credentials.js'
import { commandProcessorDrain } from './lib/drain.js'
import { commandInvite, INVITE_HELP } from './lib/invites.js'
import { joinMesh } from './lib/join.js'
import { inviteJoin } from './lib/join-token.js'
import { METRICS_FLAGS, metricsOverrides } from './lib/metrics-flags.js'
import { commandModel, MODEL_HELP } from './lib/model.js'
import { up } from './lib/up.js'

const HELP: Record<string, string> = {
  main: `llm-mesh ${VERSION} — a peer-to-peer inference mesh

Usage: llm-mesh <command> [options]

Commands:
  up          start a local mesh (DHT bootstrap, gateway, processors) and chat with it
  chat        chat with a running mesh
  status      processors of a running mesh
  gateway     run a gateway worker
  processor   run a processor worker next to your models
  bootstrap   run a DHT bootstrap node
  user        add, list and change users (admins)
  key         create, list and revoke API keys
  invite      make, list and revoke tokens that join a new machine in one command (admins)
  usage       tokens and requests per day and model, and where the limits stand
  audit       who did what to which account, key, invite or processor, and failed logins (admins)
  model       ls, pull, rm, cp, load, unload: the mesh's models; tiny: write the tiny test model

llm-mesh <command> --help shows a command's options.`,
  up: `Usage: llm-mesh up [--data DIR] [--processors N] [--no-chat] [--model NAME] [--admin-password PW]
                   [--http-port N]

Starts a DHT bootstrap on 127.0.0.1, a gateway and N processors, all state in DIR,
then an interactive chat. Backend: Ollama if it answers at OLLAMA_HOST, else the
GGUF files in DIR/models, else the tiny test model written there on first run.
On first run it creates the admin user 'admin' and prints its password once (or
sets --admin-password PW). While it runs, 'llm-mesh user|key|usage|chat|status
--data DIR' act as the local operator (an admin key kept in DIR/operator.key).

  --data DIR          state folder (default ./.llm-mesh)
  --processors N      processors to start (default 1)
  --no-chat           no chat: print 'llm-mesh ready …' and serve until SIGINT/SIGTERM
  --model NAME        model to chat with (default: the first one)
  --mesh NAME         mesh name (default 'default')
  --bootstrap-port P  port of the DHT bootstrap (default 49737, any free port if taken)
  --log-level LEVEL   trace|debug|info|warn|error (logs go to DIR/logs/)
  --admin-password PW the admin's password (created, or reset to PW)
  --http-port N       serve the Ollama and OpenAI APIs on 127.0.0.1:N (prints the base URL)`,
  chat: `Usage: llm-mesh chat [--data DIR] [--bootstrap LIST] [--model NAME] [--verbose]
                     [--api-key KEY | --user NAME]

Joins the mesh that 'llm-mesh up' runs from DIR (default ./.llm-mesh), or the one
reached through --bootstrap host:port[,host:port] | public.
Signs in with --api-key KEY (or LLM_MESH_API_KEY), or as --user NAME (password from
LLM_MESH_PASSWORD or asked), or as the local operator of 'up' in DIR.
--verbose prints each answer's request id (as in the gateway's and processor's logs)
and its per-hop timing.`,
  status: `Usage: llm-mesh status [--json] [--data DIR] [--bootstrap LIST] [--api-key KEY | --user NAME]

Shows the processors a gateway sees: key, backend, models, capacity and load.`,
  user: USER_HELP,
  key: KEY_HELP,
  invite: INVITE_HELP,
  usage: USAGE_HELP,
  audit: AUDIT_HELP,
  gateway: `Usage: llm-mesh gateway [--config FILE] [--bootstrap LIST] [--store DIR] [--data DIR]
       llm-mesh gateway --join TOKEN [--data DIR] [--store DIR]

--join TOKEN (from 'llm-mesh invite --role gateway' on a gateway of the mesh) joins this
gateway to that mesh: mesh, bootstrap and relays come from the token, its processors serve
this gateway's users; the join is kept in DIR/join-gateway.json, the store in DIR/gateway unless
--store; 'llm-mesh gateway --data DIR' restarts it.

Config: FILE (default config/gateway.json), then LLM_MESH_* variables, then flags.
On the first start of a store with no users it creates the admin user 'admin', with the
password in LLM_MESH_ADMIN_PASSWORD, else a generated one printed once.
  --bootstrap LIST   host:port[,host:port] of DHT nodes, or 'public' (required somewhere)
  --store DIR        this gateway's store (identity, users, keys, usage ledger)
  --strategy NAME    least-loaded (default) | fastest | round-robin | random-weighted
  --http-port N      serve the Ollama (/api) and OpenAI (/v1) APIs on port N
  --http-host H      …on interface H (default 127.0.0.1; set it to expose them)
  --metrics-port N   GET /metrics on a port of its own too (--metrics-host H)
  --mesh-secret S    derive this gateway's identity from a secret its processors share
                     (or LLM_MESH_SECRET); --gateway-index N tells gateways apart
  --admission MODE   processors used: members (trusted, joined by invite, or proving the
                     mesh secret) | any (default: any on a loopback bootstrap, else members)
  --data DIR         join the mesh 'llm-mesh up' runs from DIR
  --mesh NAME        mesh name (default 'default')
  --log-level LEVEL`,
  processor: `Usage: llm-mesh processor [--config FILE] [--bootstrap LIST] [--store DIR] [--models DIR]
                          [--backend auto|llamacpp|ollama|echo] [--ollama-host URL] [--parallel N]
       llm-mesh processor --join TOKEN [--data DIR] [backend flags]
       llm-mesh processor drain|undrain KEY   (maintenance, through a gateway: see 'processor drain --help')

--join TOKEN (from 'llm-mesh invite' on a gateway) is the whole setup: the mesh, its
bootstrap and the gateways to trust come from it; the identity is kept in DIR/processor and
the join in DIR/join.json (DIR default ./.llm-mesh); 'llm-mesh processor --data DIR' restarts it.
LLM_MESH_JOIN=TOKEN instead of --join keeps the token out of the process list.

Config: FILE (default config/processor.json), then LLM_MESH_* / OLLAMA_HOST, then flags.
  --bootstrap LIST   host:port[,host:port] of DHT nodes, or 'public' (required somewhere)
  --store DIR        this processor's store (its identity survives restarts)
  --models DIR       folder of .gguf files (default STORE/models)
  --backend KIND     auto (default): Ollama if it answers, else llama.cpp;
                     echo: the instant test backend (no model; for benchmarks)
  --ollama-host URL  default http://127.0.0.1:11434 (or OLLAMA_HOST)
  --parallel N       generations at once (default 2)
  --threads N        llama.cpp threads (default 1)
  --tiny-fallback    write the tiny test model when no model is found
  --trust-gateway K  hex key of a gateway allowed to call this processor (repeatable;
                     or LLM_MESH_TRUSTED_GATEWAYS); every other peer is refused
  --mesh-secret S    admit the gateways whose identity derives from S (or LLM_MESH_SECRET)
  --allow-any-peer   serve any peer: only for a mesh whose every node is trusted
  --weight W         share of traffic under the random-weighted strategy (default 1)
  --throttle-tps N   hand out at most N tokens/s per generation: a slower machine, for
                     testing and benchmarking unequal meshes
  --drain            start drained for maintenance (no new work until undrained;
                     SIGUSR2 toggles drained/serving while it runs)
  --metrics-port N   GET /metrics on port N (0: any free; --metrics-host H, default 127.0.0.1)
  --data DIR         join the mesh 'llm-mesh up' runs from DIR: serve its gateway, with
                     the models in DIR/models unless --models (or the config) names others
  --mesh NAME, --log-level LEVEL`,
  bootstrap: BOOTSTRAP_HELP,
  model: MODEL_HELP,
}

function help(cmd: string): number {
  process.stdout.write(`${HELP[cmd] ?? HELP.main}\n`)
  return 0
}

async function serveWorker(
  worker: GatewayWorker | ProcessorWorker,
  onReady: () => Promise<unknown> = async () => {},
): Promise<number> {
  await worker.ready()
  try {
    await onReady()
  } catch (err) {
    await worker.close()
    throw err
  }
  const http = worker instanceof GatewayWorker ? worker.httpUrl : null
  process.send?.({
    type: 'ready',
    publicKey: worker.publicKeyHex,
    ...(http ? { http } : {}),
    backend:
      worker instanceof ProcessorWorker
        ? `${worker.backend.describe()} — ${worker.backendChoice?.reason ?? 'configured'}`
        : 'gateway',
  })
  process.stdout.write(`${worker.role} ready ${worker.publicKeyHex}${http ? ` http ${http}` : ''}\n`)
  // Started by `up` with an IPC channel: when the parent goes, so do we.
  const parentGone = new Promise<void>((r) => process.once('disconnect', () => r()))
  await Promise.race([waitForSignal(), parentGone])
  await worker.close()
  return 0
}

async function commandGateway(args: string[]): Promise<number> {
  const { values } = parse(args, {
    ...WORKER_FLAGS,
    store: { type: 'string' },
    'mesh-secret': { type: 'string' },
    'gateway-index': { type: 'string' },
    strategy: { type: 'string' },
    'http-port': { type: 'string' },
    'http-host': { type: 'string' },
    admission: { type: 'string' },
    join: { type: 'string' },
    ...METRICS_FLAGS,
  })
  if (values.help) return help('gateway')
  const httpPort = int(values['http-port'], 'http-port', 0)
  const flags: ConfigInput = { ...workerOverrides(values), ...metricsOverrides(values) }
  if (str(values['mesh-secret'])) flags.meshSecret = str(values['mesh-secret'])
  const index = int(values['gateway-index'], 'gateway-index', 0)
  if (index !== undefined) flags.gatewayIndex = index
  if (str(values.strategy)) flags.routing = { strategy: str(values.strategy) }
  if (str(values.admission)) flags.processors = { admission: str(values.admission) }
  if (httpPort !== undefined || str(values['http-host'])) {
    flags.http = {
      enabled: true,
      ...(httpPort !== undefined ? { port: httpPort } : {}),
      ...(str(values['http-host']) ? { host: str(values['http-host']) } : {}),
    }
  }
  const store = str(values.store)
  if (store) flags.store = resolve(store)
  // A join (--join TOKEN, or the one saved in --data DIR) says the mesh; else --data may be `up`'s.
  const joining = inviteJoin('gateway', values, flags)
  const config = loadConfig(gatewayConfigSchema, 'gateway', {
    ...(str(values.config) ? { file: str(values.config) } : {}),
    overrides: joining?.overrides ?? deepMerge(workerOverrides(values, dataMesh(values)), flags),
  })
  // The first admin is made before the gateway serves anyone: under open registration a peer
  // could otherwise register first (and take the name).
  const gateway: GatewayWorker = new GatewayWorker(config, {
    beforeServe: async () => {
      await firstAdmin(gateway.auth, process.env, gateway.audit)
    },
  })
  return serveWorker(gateway, async () => {
    await joining?.save()
  })
}

async function commandProcessor(args: string[]): Promise<number> {
  if (args[0] === 'drain' || args[0] === 'undrain')
    return commandProcessorDrain(args.slice(1), args[0] === 'drain')
  const { values } = parse(args, {
    ...WORKER_FLAGS,
    store: { type: 'string' },
    models: { type: 'string' },
    backend: { type: 'string' },
    'ollama-host': { type: 'string' },
    parallel: { type: 'string' },
    threads: { type: 'string' },
    'tiny-fallback': { type: 'boolean' },
    'trust-gateway': { type: 'string', multiple: true },
    'throttle-tps': { type: 'string' },
    weight: { type: 'string' },
    'mesh-secret': { type: 'string' },
    'allow-any-peer': { type: 'boolean' },
    join: { type: 'string' },
    drain: { type: 'boolean' },
    ...METRICS_FLAGS,
  })
  if (values.help) return help('processor')
  const backend: ConfigInput = {}
  if (str(values.models)) backend.modelsDir = resolve(str(values.models) as string)
  if (str(values.backend)) backend.type = str(values.backend)
  if (str(values['ollama-host'])) backend.ollamaHost = str(values['ollama-host'])
  const parallel = int(values.parallel, 'parallel')
  if (parallel) backend.maxParallel = parallel
  const threads = int(values.threads, 'threads')
  if (threads) backend.threads = threads
  if (values['tiny-fallback']) backend.tinyModelFallback = true
  const throttle = int(values['throttle-tps'], 'throttle-tps')
  if (throttle) backend.throttle = { tokensPerSecond: throttle }
  const weight = str(values.weight)
  const store = str(values.store)
  const firewall: ConfigInput = {}
  const trusted = values['trust-gateway']
  if (Array.isArray(trusted)) firewall.trustedGateways = trusted.flatMap((v) => v.split(',')).filter(Boolean)
  if (str(values['mesh-secret'])) firewall.meshSecret = str(values['mesh-secret'])
  if (values['allow-any-peer']) firewall.allowAnyPeer = true
  const flags = deepMerge(workerOverrides(values), store ? { store: resolve(store) } : {}, {
    backend,
    ...(weight !== undefined ? { weight: Number(weight) } : {}),
    ...(values.drain ? { draining: true } : {}),
    ...(Object.keys(firewall).length ? { firewall } : {}),
    ...metricsOverrides(values),
  })
  // A join (--join TOKEN, or the one saved in --data DIR) says the mesh; else --data may be `up`'s.
  const joining = inviteJoin('processor', values, flags)
  const mesh = joining ? null : dataMesh(values)
  const config = loadConfig(processorConfigSchema, 'processor', {
    ...(str(values.config) ? { file: str(values.config) } : {}),
    overrides: joining?.overrides ?? deepMerge(workerOverrides(values, mesh), flags),
  })
  if (mesh) {
    // Joining `up`'s mesh means serving its gateway (added to any other trusted ones), and
    // its models unless a folder is named.
    if (!config.firewall.trustedGateways.includes(mesh.gateway))
      config.firewall.trustedGateways.push(mesh.gateway)
    config.backend.modelsDir ??= join(dataDir(values), 'models')
  }
  const processor = new ProcessorWorker(config)
  // SIGUSR2 drains for maintenance, and the next one undrains.
  processor.maintenance.toggleOn('SIGUSR2')
  return serveWorker(processor, async () => joining?.save())
}

async function commandChat(args: string[]): Promise<number> {
  const { values } = parse(args, {
    ...WORKER_FLAGS,
    ...CREDENTIAL_FLAGS,
    user: { type: 'string' },
    model: { type: 'string' },
    verbose: { type: 'boolean' },
  })
  if (values.help) return help('chat')
  const client = await joinMesh(values)
  try {
    await client.connectGateway()
    const model = str(values.model)
    await runChat({ client, ...(model ? { model } : {}), verbose: values.verbose === true })
  } finally {
    await client.close()
  }
  return 0
}

async function commandStatus(args: string[]): Promise<number> {
  const { values } = parse(args, {
    ...WORKER_FLAGS,
    ...CREDENTIAL_FLAGS,
    user: { type: 'string' },
    json: { type: 'boolean' },
  })
  if (values.help) return help('status')
  const client = await joinMesh(values)
  try {
    const status = await client.status()
    if (values.json) {
      process.stdout.write(`${JSON.stringify(status, null, 2)}\n`)
      return 0
    }
    process.stdout.write(
      `gateway ${status.publicKey}  mesh ${status.mesh}  v${status.version}  strategy ${status.strategy}  active ${status.active}  queued ${status.queued}\n`,
    )
    const health = status.health
    if (health) {
      const failing = health.checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail}`)
      process.stdout.write(
        `${health.ready ? 'ready' : 'NOT READY'}${failing.length ? `  (${failing.join('; ')})` : ''}\n`,
      )
    }
    if (status.processors.length === 0) process.stdout.write('no processors\n')
    for (const p of status.processors) {
      const speed = p.measuredTokensPerSecond ?? p.tokensPerSecond
      process.stdout.write(
        `processor ${p.publicKey}  ${p.state ?? 'serving'}\n  backend ${p.backend}  capacity ${p.capacity}  in-flight ${p.inflight} (all gateways: ${p.active} running, ${p.queued} waiting)  breaker ${p.breaker}\n  ${speed} tok/s  ttft ${p.ttftMs ?? '-'} ms  served ${p.served}  failed ${p.failures}  seen ${p.lastSeenMs} ms ago${p.relayed ? '  (through a relay)' : ''}\n  models ${p.models.join(', ')}\n`,
      )
    }
  } finally {
    await client.close()
  }
  return 0
}

async function commandUp(args: string[]): Promise<number> {
  const { values } = parse(args, {
    data: { type: 'string' },
    processors: { type: 'string' },
    'no-chat': { type: 'boolean' },
    model: { type: 'string' },
    mesh: { type: 'string' },
    'bootstrap-port': { type: 'string' },
    'log-level': { type: 'string' },
    'admin-password': { type: 'string' },
    'http-port': { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  })
  if (values.help) return help('up')
  const httpPort = int(values['http-port'], 'http-port', 0)
  const adminPassword = str(values['admin-password'])
  const model = str(values.model)
  return up({
    dataDir: dataDir(values),
    processors: int(values.processors, 'processors') ?? 1,
    chat: !values['no-chat'],
    mesh: str(values.mesh) ?? 'default',
    bootstrapPort: int(values['bootstrap-port'], 'bootstrap-port', 0) ?? 0,
    logLevel: str(values['log-level']) ?? 'info',
    ...(model ? { model } : {}),
    ...(adminPassword ? { adminPassword } : {}),
    ...(httpPort !== undefined ? { httpPort } : {}),
  })
}

const COMMANDS: Record<string, (args: string[]) => Promise<number>> = {
  up: commandUp,
  chat: commandChat,
  status: commandStatus,
  gateway: commandGateway,
  processor: commandProcessor,
  bootstrap: commandBootstrap,
  model: commandModel,
  user: commandUser,
  key: commandKey,
  usage: commandUsage,
  invite: commandInvite,
  audit: commandAudit,
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') return help(rest[0] ?? 'main')
  if (cmd === '--version' || cmd === '-v') {
    process.stdout.write(`${VERSION}\n`)
    return 0
  }
  const run = COMMANDS[cmd]
  if (!run) {
    process.stderr.write(`llm-mesh: unknown command '${cmd}'\n\n${HELP.main}\n`)
    return 2
  }
  return run(rest)
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    const e = MeshError.from(err)
    process.stderr.write(`llm-mesh: ${e.message}\n`)
    process.exit(e.code === 'ERR_BAD_CONFIG' || e.code === 'ERR_BAD_REQUEST' ? 2 : 1)
  },
)
