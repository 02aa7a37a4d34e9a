import { createInterface, type Interface } from 'node:readline'
import { MeshError } from '../../kernel/errors.js'
import type { InferResult } from '../../kernel/inference.js'
import type { ChatMessage } from '../../kernel/wire.js'
import type { MeshClient } from '../../workers/client/client.worker.js'
import type { MeshStream } from '../../workers/client/mesh-stream.js'
import { formatLimits, formatUsage } from './accounts.js'

export const CHAT_HELP = `Commands:
  /models          list the mesh's models
  /model NAME      switch model (history is kept)
  /clear           forget the conversation
  /status          processors of the mesh
  /usage           your usage today and this month, and your limits
  /help            this help
  /quit            leave (Ctrl-D too)
Ctrl-C stops the current answer; twice when idle leaves.`

export interface ChatOptions {
  client: MeshClient
  model?: string
  input?: NodeJS.ReadableStream
  output?: NodeJS.WritableStream
  /** After each answer: its request id and per-hop timing. */
  verbose?: boolean
}

const dim = (s: string, tty: boolean) => (tty ? `\x1b[2m${s}\x1b[0m` : s)

/** `--verbose`: an answer's request id and its timing per hop, in ms. */
export function traceNote(requestId: unknown, timing?: InferResult['timing']): string {
  let note = `request ${typeof requestId === 'string' ? requestId : '(none)'}`
  if (timing) {
    const { totalMs, gatewayMs, queueMs, retryMs, upstreamMs, processorMs, backendMs } = timing
    note += ` · total ${totalMs} ms: gateway ${gatewayMs}, queue ${queueMs}, retry ${retryMs}, upstream ${upstreamMs}`
    if (processorMs !== undefined) note += ` (processor ${processorMs}, backend ${backendMs})`
  }
  return note
}

/**
 * The interactive chat: streams each answer as it comes, keeps multi-turn
 * history, and treats Ctrl-C as "stop this answer" rather than "exit".
 */
export async function runChat(opts: ChatOptions): Promise<void> {
  await new ChatSession(opts).run()
}

/** One chat: the readline loop, its slash commands, the turns it streams and its Ctrl-C handling. */
class ChatSession {
  private readonly client: MeshClient
  private readonly output: NodeJS.WritableStream
  private readonly tty: boolean
  private readonly rl: Interface
  private readonly lines: AsyncIterator<string>
  private readonly history: ChatMessage[] = []
  private model: string | undefined
  private readonly verbose: boolean
  private current: MeshStream | null = null
  private lastIdleInterrupt = 0
  private quitting = false

  constructor(opts: ChatOptions) {
    const { client, input = process.stdin, output = process.stdout } = opts
    this.client = client
    this.output = output
    this.tty = (output as NodeJS.WriteStream).isTTY === true
    this.model = opts.model
    this.verbose = opts.verbose === true
    this.rl = createInterface({ input, output, terminal: this.tty, historySize: 200 })
    // Start reading now: lines piped in while the models are listed would be lost otherwise.
    this.lines = this.rl[Symbol.asyncIterator]()
  }

  async run(): Promise<void> {
    const { rl } = this
    rl.on('SIGINT', this.interrupt)
    // Without a terminal readline sees no Ctrl-C; the signal reaches the process instead.
    process.on('SIGINT', this.interrupt)
    try {
      this.model ??= await this.pickModel()
      this.write(
        this.model
          ? `Chatting with ${this.model}. /help for commands.\n`
          : 'No models are served by the mesh yet; /models to check again.\n',
      )
      rl.setPrompt(this.tty ? '>>> ' : '')
      rl.prompt()
      for await (const raw of { [Symbol.asyncIterator]: () => this.lines }) {
        // readline still hands over lines it had read before /quit closed it: they are not sent.
        if (this.quitting) break
        const line = raw.trim()
        if (!line) rl.prompt()
        else if (line.startsWith('/')) await this.command(line)
        else await this.turn(line)
      }
    } finally {
      process.off('SIGINT', this.interrupt)
      this.current?.abort()
      rl.close()
    }
  }

  private write(s: string): void {
    this.output.write(s)
  }

  private quit(): void {
    this.quitting = true
    this.rl.close()
  }

  /** Ctrl-C: stops the answer being streamed; when idle, a second one within 2 s leaves. */
  private readonly interrupt = (): void => {
    if (this.current) {
      this.current.abort()
      return
    }
    const now = Date.now()
    if (now - this.lastIdleInterrupt < 2_000) {
      this.quit()
      return
    }
    this.lastIdleInterrupt = now
    this.write('\n(Ctrl-C again or /quit to leave)\n')
    this.rl.prompt()
  }

  private async pickModel(): Promise<string | undefined> {
    const models = await this.client.models()
    return models[0]?.name
  }

  /** A slash command; a failed one prints the error and the chat goes on. */
  private async command(line: string): Promise<void> {
    const [cmd, ...rest] = line.split(/\s+/)
    const arg = rest.join(' ')
    try {
      switch (cmd) {
        case '/quit':
        case '/exit':
        case '/bye':
          this.quit()
          return
        case '/help':
          this.write(`${CHAT_HELP}\n`)
          break
        case '/clear':
          this.history.length = 0
          this.write('Conversation cleared.\n')
          break
        case '/models':
          await this.listModels()
          break
        case '/model':
          await this.switchModel(arg)
          break
        case '/usage':
          this.write(`${formatUsage(await this.client.usage())}\n`)
          break
        case '/status':
          await this.listProcessors()
          break
        default:
          this.write(`Unknown command ${cmd}. /help lists them.\n`)
      }
    } catch (err) {
      this.write(`error: ${MeshError.from(err).message}\n`)
    }
    // A second Ctrl-C during the command left: prompting a closed readline would resume stdin.
    if (!this.quitting) this.rl.prompt()
  }

  private async listModels(): Promise<void> {
    const models = await this.client.models()
    if (models.length === 0) this.write('No models.\n')
    for (const m of models)
      this.write(`${m.name === this.model ? '*' : ' '} ${m.name}\t${m.details.parameterSize}\n`)
  }

  /** `/model NAME`: switches to a model the mesh serves; `/model` alone says the current one. */
  private async switchModel(name: string): Promise<void> {
    if (!name) {
      this.write(`Model: ${this.model ?? '(none)'}\n`)
      return
    }
    const models = await this.client.models()
    if (!models.some((m) => m.name === name || `${m.name}:latest` === name)) {
      this.write(`No model '${name}'. /models lists them.\n`)
      return
    }
    this.model = name
    this.write(`Model: ${this.model}\n`)
  }

  private async listProcessors(): Promise<void> {
    const status = await this.client.status()
    for (const p of status.processors) {
      this.write(
        `${p.publicKey.slice(0, 12)}  ${p.backend}  ${p.active}/${p.capacity}  ${p.models.join(', ')}\n`,
      )
    }
    if (status.processors.length === 0) this.write('No processors.\n')
  }

  /** One user turn: asks the model, streams its answer and keeps both in the history. */
  private async turn(line: string): Promise<void> {
    if (!this.model) this.model = await this.pickModel().catch(() => undefined)
    if (!this.model) {
      this.write('No model available yet.\n')
      if (!this.quitting) this.rl.prompt()
      return
    }
    this.history.push({ role: 'user', content: line })
    const started = Date.now()
    this.current = this.client.chat({ model: this.model, messages: [...this.history], stream: true })
    try {
      const text = await this.streamAnswer(this.current, started)
      this.history.push({ role: 'assistant', content: text })
    } catch (err) {
      this.history.pop()
      await this.reportFailedTurn(MeshError.from(err))
    } finally {
      this.current = null
    }
    if (!this.quitting) this.rl.prompt()
  }

  /** Writes the answer as it comes, ending with its token rate; returns its text. */
  private async streamAnswer(answer: MeshStream, started: number): Promise<string> {
    let text = ''
    for await (const part of answer) {
      if (!part.done) {
        text += part.text
        this.write(part.text)
        continue
      }
      const r = part.result
      const secs = Math.max(1, Date.now() - started) / 1000
      const note =
        r.doneReason === 'cancelled'
          ? 'stopped'
          : `${r.completionTokens} tokens, ${(r.completionTokens / secs).toFixed(0)} tok/s`
      this.write(`\n${dim(`[${note}]`, this.tty)}\n`)
      if (this.verbose) this.write(`${dim(`[${traceNote(r.requestId, r.timing)}]`, this.tty)}\n`)
    }
    return text
  }

  /** A stopped answer says so; a limit hit also shows the caller's limits. */
  private async reportFailedTurn(e: MeshError): Promise<void> {
    this.write(`\n${e.code === 'ERR_CANCELLED' ? dim('[stopped]', this.tty) : `error: ${e.message}`}\n`)
    if (this.verbose) this.write(`${dim(`[${traceNote(e.details?.requestId)}]`, this.tty)}\n`)
    if (e.code === 'ERR_RATE_LIMITED' || e.code === 'ERR_QUOTA_EXCEEDED') {
      const who = await this.client.whoami().catch(() => null)
      if (who) this.write(`${formatLimits(who.limits)}\n`)
    }
  }
}
