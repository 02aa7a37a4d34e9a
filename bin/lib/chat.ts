import { createInterface } from 'node:readline'
import { MeshError } from '../../kernel/errors.js'
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
}

const dim = (s: string, tty: boolean) => (tty ? `\x1b[2m${s}\x1b[0m` : s)

/**
 * The interactive chat: streams each answer as it comes, keeps multi-turn
 * history, and treats Ctrl-C as "stop this answer" rather than "exit".
 */
export async function runChat(opts: ChatOptions): Promise<void> {
  const { client, input = process.stdin, output = process.stdout } = opts
  const tty = (output as NodeJS.WriteStream).isTTY === true
  const write = (s: string) => output.write(s)
  const history: ChatMessage[] = []
  let model = opts.model
  let current: MeshStream | null = null
  let lastIdleInterrupt = 0
  let quitting = false

  const rl = createInterface({ input, output, terminal: tty, historySize: 200 })
  // Start reading now: lines piped in while the models are listed would be lost otherwise.
  const lines = rl[Symbol.asyncIterator]()
  const quit = () => {
    quitting = true
    rl.close()
  }
  const interrupt = () => {
    if (current) {
      current.abort()
      return
    }
    const now = Date.now()
    if (now - lastIdleInterrupt < 2_000) return quit()
    lastIdleInterrupt = now
    write('\n(Ctrl-C again or /quit to leave)\n')
    rl.prompt()
  }
  rl.on('SIGINT', interrupt)
  // Without a terminal readline sees no Ctrl-C; the signal reaches the process instead.
  process.on('SIGINT', interrupt)

  const pickModel = async (): Promise<string | undefined> => {
    const models = await client.models()
    return models[0]?.name
  }

  try {
    model ??= await pickModel()
    write(
      model
        ? `Chatting with ${model}. /help for commands.\n`
        : 'No models are served by the mesh yet; /models to check again.\n',
    )
    rl.setPrompt(tty ? '>>> ' : '')
    rl.prompt()
    for await (const raw of { [Symbol.asyncIterator]: () => lines }) {
      const line = raw.trim()
      if (!line) {
        rl.prompt()
        continue
      }
      if (line.startsWith('/')) {
        const [cmd, ...rest] = line.split(/\s+/)
        const arg = rest.join(' ')
        try {
          switch (cmd) {
            case '/quit':
            case '/exit':
            case '/bye':
              quit()
              continue
            case '/help':
              write(`${CHAT_HELP}\n`)
              break
            case '/clear':
              history.length = 0
              write('Conversation cleared.\n')
              break
            case '/models': {
              const models = await client.models()
              if (models.length === 0) write('No models.\n')
              for (const m of models)
                write(`${m.name === model ? '*' : ' '} ${m.name}\t${m.details.parameterSize}\n`)
              break
            }
            case '/model':
              if (!arg) write(`Model: ${model ?? '(none)'}\n`)
              else {
                const models = await client.models()
                if (!models.some((m) => m.name === arg || `${m.name}:latest` === arg)) {
                  write(`No model '${arg}'. /models lists them.\n`)
                } else {
                  model = arg
                  write(`Model: ${model}\n`)
                }
              }
              break
            case '/usage':
              write(`${formatUsage(await client.usage())}\n`)
              break
            case '/status': {
              const status = await client.status()
              for (const p of status.processors) {
                write(
                  `${p.publicKey.slice(0, 12)}  ${p.backend}  ${p.active}/${p.capacity}  ${p.models.join(', ')}\n`,
                )
              }
              if (status.processors.length === 0) write('No processors.\n')
              break
            }
            default:
              write(`Unknown command ${cmd}. /help lists them.\n`)
          }
        } catch (err) {
          write(`error: ${MeshError.from(err).message}\n`)
        }
        rl.prompt()
        continue
      }
      if (!model) model = await pickModel().catch(() => undefined)
      if (!model) {
        write('No model available yet.\n')
        rl.prompt()
        continue
      }
      history.push({ role: 'user', content: line })
      const started = Date.now()
      let text = ''
      current = client.chat({ model, messages: [...history], stream: true })
      try {
        for await (const part of current) {
          if (!part.done) {
            text += part.text
            write(part.text)
            continue
          }
          const r = part.result
          const secs = Math.max(1, Date.now() - started) / 1000
          const note =
            r.doneReason === 'cancelled'
              ? 'stopped'
              : `${r.completionTokens} tokens, ${(r.completionTokens / secs).toFixed(0)} tok/s`
          write(`\n${dim(`[${note}]`, tty)}\n`)
        }
        history.push({ role: 'assistant', content: text })
      } catch (err) {
        history.pop()
        const e = MeshError.from(err)
        write(`\n${e.code === 'ERR_CANCELLED' ? dim('[stopped]', tty) : `error: ${e.message}`}\n`)
        if (e.code === 'ERR_RATE_LIMITED' || e.code === 'ERR_QUOTA_EXCEEDED') {
          const who = await client.whoami().catch(() => null)
          if (who) write(`${formatLimits(who.limits)}\n`)
        }
      } finally {
        current = null
      }
      if (!quitting) rl.prompt()
    }
  } finally {
    process.off('SIGINT', interrupt)
    current?.abort()
    rl.close()
  }
}
