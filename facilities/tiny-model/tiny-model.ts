/**
 * Generates a tiny llama GGUF whose greedy output is known in advance, so tests
 * and first runs can exercise the whole llama.cpp path without real weights
 * (none are available offline).
 *
 * The trick: attention and FFN weights are zero, so every layer adds nothing to
 * the residual stream and the last hidden state is the last token's embedding.
 * The model is then a bigram table written into the output matrix: token t
 * predicts successor(t), e.g. 'a' → 'b' … 'z' → `</s>`.
 */
import { mkdir, rename, rm, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { seededRandom } from '../../kernel/util.js'
import { encodeGguf, type GgufTensor, type GgufValue } from './gguf-writer.js'

export const TINY_MODEL_NAME = 'llm-mesh-tiny-test'
export const TINY_MODEL_DESCRIPTION = 'llm-mesh tiny test model (not a real LLM)'

/** Renders every message's content; node-llama-cpp rejects templates that drop a role. */
export const TINY_CHAT_TEMPLATE =
  "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' %}" +
  "{{ m['content'] + eos_token }}{% else %}{{ m['content'] }}{% endif %}{% endfor %}"

/** The template of a `think` model: an assistant turn's reasoning goes between `<think>` and `</think>`. */
export const TINY_THINK_CHAT_TEMPLATE =
  "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' %}" +
  "{% if m['reasoning_content'] %}{{ '<think>' + m['reasoning_content'] + '</think>' }}{% endif %}" +
  "{{ m['content'] + eos_token }}{% else %}{{ m['content'] }}{% endif %}{% endfor %}"

const N_EMBD = 128
const N_LAYER = 4
const N_HEAD = 4
const N_FF = 384
const CONTEXT_LENGTH = 2048
const RMS_EPS = 1e-5
const SEED = 0x6c6c6d
/**
 * Logit of the intended next token. Random unit vectors in 127 dims have
 * |dot| < ~0.35, so every other logit stays below ~14 and the gap (> 25) makes
 * sampling at temperature 0.8 pick the intended token with p > 1 - 1e-10.
 */
const TARGET_LOGIT = 40
/** How far below the successor's logit its other case lies in a `spread` model. */
export const SPREAD_GAP = 0.5
/** Share of an end-of-chain token's embedding on the reserved EOS direction. */
const EOS_DIRECTION_WEIGHT = 0.8

const UNK = 0
const BOS = 1
const EOS = 2
const FIRST_BYTE_TOKEN = 3
const FIRST_CHAR_TOKEN = FIRST_BYTE_TOKEN + 256
const FIRST_PRINTABLE = 0x20
const LAST_PRINTABLE = 0x7e
const N_VOCAB = FIRST_CHAR_TOKEN + (LAST_PRINTABLE - FIRST_PRINTABLE + 1)
/** A `think` model's two more tokens, after the others. */
const THINK_OPEN = N_VOCAB
const THINK_CLOSE = N_VOCAB + 1
/** The text of a `call` model's last token. */
const CALL_PREFIX = '||call:'

// llama.cpp token types
const TOKEN_NORMAL = 1
const TOKEN_UNKNOWN = 2
const TOKEN_CONTROL = 3
const TOKEN_USER_DEFINED = 4
const TOKEN_BYTE = 6

const CHAINS: ReadonlyArray<readonly [string, string]> = [
  ['a', 'z'],
  ['A', 'Z'],
  ['0', '9'],
]

export interface TinyModelOptions {
  /** How far each letter/digit jumps: 1 makes 'a' predict 'b', 2 makes it predict 'c'. Default 1. */
  step?: number
  /** general.name; defaults to a name saying this is a test model. */
  name?: string
  /**
   * Chains wrap around ('z' → 'a') instead of ending, so greedy output never
   * stops by itself: only `num_predict` or a cancel ends it. For long
   * generations in benchmarks and cancellation tests.
   */
  loop?: boolean
  /**
   * Each letter also predicts its successor's other case, nearly as strongly ('c' → 'd', or
   * 'D' with a logit `SPREAD_GAP` lower): greedy text is unchanged, but sampling at
   * temperature 1 depends on the seed, and a penalty on the successor (once generated) flips
   * the case. Letters and digits get orthogonal embeddings so the gap is exact.
   */
  spread?: boolean
  /**
   * The model reasons: '9' opens a thought (`<think>`, a control token), the thought is the
   * lowercase alphabet, 'z' closes it (`</think>`) and the answer is the uppercase alphabet;
   * its chat template has a place for reasoning, so node-llama-cpp sees thought segments.
   * After `9`: `<think>abc…z</think>ABC…Z`.
   */
  think?: boolean
  /**
   * The model calls a function: '!' predicts `||call:`, one token of its vocabulary, which is
   * how node-llama-cpp's default function-call syntax (for templates with none) opens a call;
   * from there node-llama-cpp's function calling picks the name and arguments by grammar.
   */
  call?: boolean
}

/** The options that shape the weights. */
type Shape = Required<Omit<TinyModelOptions, 'name'>>

const vocabSize = (shape: Shape) => N_VOCAB + (shape.think ? 2 : 0) + (shape.call ? 1 : 0)

function charToken(ch: string): number {
  return FIRST_CHAR_TOKEN + (ch.charCodeAt(0) - FIRST_PRINTABLE)
}

function vocabulary(shape: Shape): { tokens: string[]; types: number[]; scores: number[] } {
  const tokens = ['<unk>', '<s>', '</s>']
  const types = [TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_CONTROL]
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`)
    types.push(TOKEN_BYTE)
  }
  for (let c = FIRST_PRINTABLE; c <= LAST_PRINTABLE; c++) {
    // SentencePiece spells a space as U+2581.
    tokens.push(c === 0x20 ? '\u2581' : String.fromCharCode(c))
    types.push(TOKEN_NORMAL)
  }
  if (shape.think) {
    tokens.push('<think>', '</think>')
    types.push(TOKEN_CONTROL, TOKEN_CONTROL)
  }
  if (shape.call) {
    tokens.push(CALL_PREFIX)
    types.push(TOKEN_USER_DEFINED)
  }
  return { tokens, types, scores: tokens.map(() => 0) }
}

/** successor[t] = the token t predicts. */
function successors(shape: Shape): Int32Array {
  const { step, loop } = shape
  const next = new Int32Array(vocabSize(shape)).fill(EOS)
  for (const [first, last] of CHAINS) {
    const lo = first.charCodeAt(0)
    const hi = last.charCodeAt(0)
    for (let c = lo; c <= hi; c++) {
      const to = loop ? lo + ((c - lo + step) % (hi - lo + 1)) : c + step
      if (to <= hi) next[charToken(String.fromCharCode(c))] = charToken(String.fromCharCode(to))
    }
  }
  if (shape.think) {
    next[charToken('9')] = THINK_OPEN
    next[THINK_OPEN] = charToken('a')
    next[charToken('z')] = THINK_CLOSE
    next[THINK_CLOSE] = charToken('A')
  }
  if (shape.call) next[charToken('!')] = next.length - 1
  return next
}

/** The chain tokens (letters and digits), in order: a `spread` model gives each its own dimension. */
function chainTokens(): number[] {
  const tokens: number[] = []
  for (const [first, last] of CHAINS) {
    for (let c = first.charCodeAt(0); c <= last.charCodeAt(0); c++)
      tokens.push(charToken(String.fromCharCode(c)))
  }
  return tokens
}

/** The same letter in the other case, for a letter token; null for anything else. */
function otherCase(token: number): number | null {
  const ch = String.fromCharCode(token - FIRST_CHAR_TOKEN + FIRST_PRINTABLE)
  const swapped = ch === ch.toLowerCase() ? ch.toUpperCase() : ch.toLowerCase()
  return swapped === ch ? null : charToken(swapped)
}

/**
 * Dimension 0 is reserved as the "end of chain" direction; the rest hold near-orthogonal
 * random unit vectors that tell tokens apart. With `orthogonal` (a `spread` model) every
 * chain token gets a dimension of its own instead, and the other tokens random vectors on the
 * dimensions left, so logits come out exact rather than with up to ~14 of noise.
 */
function embeddings(next: Int32Array, orthogonal: boolean): Float32Array {
  const rand = seededRandom(SEED)
  const chain = orthogonal ? chainTokens() : []
  const firstFree = 1 + chain.length
  const embd = new Float32Array(next.length * N_EMBD)
  for (let t = 0; t < next.length; t++) {
    const row = embd.subarray(t * N_EMBD, (t + 1) * N_EMBD)
    const own = chain.indexOf(t)
    let norm = 0
    if (own >= 0) {
      row[1 + own] = 1
      norm = 1
    } else {
      for (let i = orthogonal ? firstFree : 1; i < N_EMBD; i++) {
        row[i] = rand() * 2 - 1
        norm += row[i] * row[i]
      }
    }
    const ends = next[t] === EOS
    const scale = (ends ? Math.sqrt(1 - EOS_DIRECTION_WEIGHT ** 2) : 1) / Math.sqrt(norm)
    for (let i = 1; i < N_EMBD; i++) row[i] *= scale
    row[0] = ends ? EOS_DIRECTION_WEIGHT : 0
  }
  return embd
}

/** Output rows: each token's successor (and, with `spread`, the successor's other case) reads its embedding. */
function outputRows(embd: Float32Array, next: Int32Array, spread: boolean): Float32Array {
  // The final RMS norm turns a unit vector into sqrt(N_EMBD) times itself.
  const outScale = TARGET_LOGIT / Math.sqrt(N_EMBD)
  const output = new Float32Array(next.length * N_EMBD)
  output[EOS * N_EMBD] = outScale / EOS_DIRECTION_WEIGHT
  const read = (to: number, from: number, scale: number) => {
    for (let i = 0; i < N_EMBD; i++) output[to * N_EMBD + i] += embd[from * N_EMBD + i] * scale
  }
  for (let t = 0; t < next.length; t++) {
    if (next[t] === EOS) continue
    read(next[t], t, outScale)
    const alternative = spread ? otherCase(next[t]) : null
    if (alternative !== null) read(alternative, t, outScale * (1 - SPREAD_GAP / TARGET_LOGIT))
  }
  return output
}

function buildTensors(shape: Shape): GgufTensor[] {
  const next = successors(shape)
  const embd = embeddings(next, shape.spread)
  const output = outputRows(embd, next, shape.spread)
  const nVocab = next.length

  const ones = () => new Float32Array(N_EMBD).fill(1)
  const zeros = (...dims: number[]) => new Float32Array(dims.reduce((a, b) => a * b, 1))
  const tensors: GgufTensor[] = [
    { name: 'token_embd.weight', dims: [N_EMBD, nVocab], data: embd },
    { name: 'output_norm.weight', dims: [N_EMBD], data: ones() },
    { name: 'output.weight', dims: [N_EMBD, nVocab], data: output },
  ]
  for (let l = 0; l < N_LAYER; l++) {
    const p = `blk.${l}`
    tensors.push(
      { name: `${p}.attn_norm.weight`, dims: [N_EMBD], data: ones() },
      { name: `${p}.attn_q.weight`, dims: [N_EMBD, N_EMBD], data: zeros(N_EMBD, N_EMBD) },
      { name: `${p}.attn_k.weight`, dims: [N_EMBD, N_EMBD], data: zeros(N_EMBD, N_EMBD) },
      { name: `${p}.attn_v.weight`, dims: [N_EMBD, N_EMBD], data: zeros(N_EMBD, N_EMBD) },
      { name: `${p}.attn_output.weight`, dims: [N_EMBD, N_EMBD], data: zeros(N_EMBD, N_EMBD) },
      { name: `${p}.ffn_norm.weight`, dims: [N_EMBD], data: ones() },
      { name: `${p}.ffn_gate.weight`, dims: [N_EMBD, N_FF], data: zeros(N_EMBD, N_FF) },
      { name: `${p}.ffn_up.weight`, dims: [N_EMBD, N_FF], data: zeros(N_EMBD, N_FF) },
      { name: `${p}.ffn_down.weight`, dims: [N_FF, N_EMBD], data: zeros(N_FF, N_EMBD) },
    )
  }
  return tensors
}

function describe(shape: Shape): string {
  const { step, loop, spread, think, call } = shape
  return (
    `bigram test model: letters and digits advance by ${step}, ${loop ? 'wrapping around' : 'then </s>'}` +
    `${spread ? ', the other case nearly as likely' : ''}${think ? ', thinking after 9' : ''}` +
    `${call ? ', calling a function after !' : ''}`
  )
}

function buildMetadata(shape: Shape, name: string): Array<[string, GgufValue]> {
  const vocab = vocabulary(shape)
  return [
    ['general.architecture', { type: 'string', value: 'llama' }],
    ['general.name', { type: 'string', value: name }],
    ['general.description', { type: 'string', value: describe(shape) }],
    ['general.file_type', { type: 'uint32', value: 0 }],
    ['general.alignment', { type: 'uint32', value: 32 }],
    ['llama.vocab_size', { type: 'uint32', value: vocabSize(shape) }],
    ['llama.context_length', { type: 'uint32', value: CONTEXT_LENGTH }],
    ['llama.embedding_length', { type: 'uint32', value: N_EMBD }],
    ['llama.block_count', { type: 'uint32', value: N_LAYER }],
    ['llama.feed_forward_length', { type: 'uint32', value: N_FF }],
    ['llama.attention.head_count', { type: 'uint32', value: N_HEAD }],
    ['llama.attention.head_count_kv', { type: 'uint32', value: N_HEAD }],
    ['llama.rope.dimension_count', { type: 'uint32', value: N_EMBD / N_HEAD }],
    ['llama.attention.layer_norm_rms_epsilon', { type: 'float32', value: RMS_EPS }],
    ['tokenizer.ggml.model', { type: 'string', value: 'llama' }],
    ['tokenizer.ggml.tokens', { type: 'array', itemType: 'string', value: vocab.tokens }],
    ['tokenizer.ggml.scores', { type: 'array', itemType: 'float32', value: vocab.scores }],
    ['tokenizer.ggml.token_type', { type: 'array', itemType: 'int32', value: vocab.types }],
    ['tokenizer.ggml.unknown_token_id', { type: 'uint32', value: UNK }],
    ['tokenizer.ggml.bos_token_id', { type: 'uint32', value: BOS }],
    ['tokenizer.ggml.eos_token_id', { type: 'uint32', value: EOS }],
    ['tokenizer.ggml.add_bos_token', { type: 'bool', value: true }],
    ['tokenizer.ggml.add_eos_token', { type: 'bool', value: false }],
    // With a prefix space, "abc" would tokenize as "▁abc" and the chain would start from '▁'.
    ['tokenizer.ggml.add_space_prefix', { type: 'bool', value: false }],
    [
      'tokenizer.chat_template',
      { type: 'string', value: shape.think ? TINY_THINK_CHAT_TEMPLATE : TINY_CHAT_TEMPLATE },
    ],
  ]
}

/** The tiny model as GGUF bytes; identical for identical options. Throws RangeError on a bad step. */
export function encodeTinyModel(opts: TinyModelOptions = {}): Buffer {
  const { step = 1, name = TINY_MODEL_DESCRIPTION, loop = false, spread = false } = opts
  const { think = false, call = false } = opts
  if (!Number.isInteger(step) || step < 1 || step > 25) {
    throw new RangeError(`step must be an integer from 1 to 25, got ${step}`)
  }
  const shape = { step, loop, spread, think, call }
  return encodeGguf({ metadata: buildMetadata(shape, name), tensors: buildTensors(shape) })
}

/**
 * Writes the tiny model to `path` (parent folders created). Atomic: a reader
 * scanning the folder never sees a half-written file, because it is written
 * next to the target under a temporary name and renamed into place.
 */
export async function writeTinyModel(path: string, opts: TinyModelOptions = {}): Promise<void> {
  const bytes = encodeTinyModel(opts)
  await mkdir(dirname(path), { recursive: true })
  // Not *.gguf, so a concurrent folder scan cannot list the partial file as a model.
  const tmp = `${path}.${process.pid}.${Date.now()}.tmp`
  try {
    await writeFile(tmp, bytes)
    await rename(tmp, path)
  } catch (err) {
    await rm(tmp, { force: true })
    throw err
  }
}
