/** What listing and showing a model need from its GGUF file: digest, architecture, size, quantization. */
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { GgmlType, GgufFileType, readGgufFileInfo } from 'node-llama-cpp'
import { isRecord } from '../../../kernel/util.js'
import type { ModelInfo } from '../../../kernel/wire.js'

/** Left out of `showModel().modelInfo`: it is `showModel().template`. */
const SKIPPED_METADATA_KEYS = new Set(['tokenizer.chat_template'])

/** Computed once per file version (see ModelFolder). */
export interface FileFacts {
  digest: string
  architecture: string
  parameterCount: number
  quantization: string
  chatTemplate: string
  modelInfo: Record<string, unknown>
}

/** A `.gguf` file of the models folder. */
export interface ModelFile {
  name: string
  path: string
  size: number
  mtimeMs: number
}

function formatParameterCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)}B`
  if (n >= 1e5) return `${(n / 1e6).toFixed(1)}M`
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`
  return String(n)
}

/** Flattens GGUF metadata to Ollama's `model_info` shape: dotted keys, scalar values only. */
function flattenMetadata(node: unknown, prefix: string, out: Record<string, unknown>): void {
  if (!isRecord(node)) return
  for (const [key, value] of Object.entries(node)) {
    const path = prefix ? `${prefix}.${key}` : key
    if (SKIPPED_METADATA_KEYS.has(path)) continue
    if (isRecord(value)) flattenMetadata(value, path, out)
    else if (typeof value === 'bigint') out[path] = Number(value)
    else if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean')
      out[path] = value
  }
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

/** The file type's name when the header has one, else the type most of the weights have. */
function quantizationOf(fileType: unknown, tensorTypes: Map<number, number>): string {
  if (typeof fileType === 'number' && GgufFileType[fileType] !== undefined) {
    return GgufFileType[fileType].replace(/^(MOSTLY|ALL)_/, '')
  }
  if (tensorTypes.size === 0) return 'unknown'
  const dominant = [...tensorTypes].sort((a, b) => b[1] - a[1])[0][0]
  return GgmlType[dominant] ?? 'unknown'
}

/** Reads and hashes a GGUF file. Throws (plain Error) when it is not a GGUF model. */
export async function readFileFacts(path: string): Promise<FileFacts> {
  const [digest, info] = await Promise.all([
    sha256File(path),
    readGgufFileInfo(path, { readTensorInfo: true, logWarnings: false }),
  ])
  const metadata: unknown = info.metadata
  const general = isRecord(metadata) && isRecord(metadata.general) ? metadata.general : {}
  const tokenizer = isRecord(metadata) && isRecord(metadata.tokenizer) ? metadata.tokenizer : {}
  // The reader is lenient (it reads unknown versions as v3); a file without an architecture is not a model.
  if ((info.version !== 2 && info.version !== 3) || typeof general.architecture !== 'string') {
    throw new Error(`${path} is not a GGUF model file`)
  }
  const architecture = general.architecture

  let parameterCount = 0
  const tensorTypes = new Map<number, number>()
  for (const t of info.tensorInfo ?? []) {
    const n = t.dimensions.reduce<number>((a, d) => a * Number(d), 1)
    parameterCount += n
    tensorTypes.set(t.ggmlType, (tensorTypes.get(t.ggmlType) ?? 0) + n)
  }

  const modelInfo: Record<string, unknown> = {}
  flattenMetadata(metadata, '', modelInfo)
  modelInfo['general.parameter_count'] = parameterCount
  return {
    digest,
    architecture,
    parameterCount,
    quantization: quantizationOf(general.file_type, tensorTypes),
    chatTemplate: typeof tokenizer.chat_template === 'string' ? tokenizer.chat_template : '',
    modelInfo,
  }
}

/** A model's entry in the listing, from its file and facts. */
export function modelInfoOf(file: ModelFile, facts: FileFacts): ModelInfo {
  return {
    name: file.name,
    size: file.size,
    digest: facts.digest,
    modifiedAt: new Date(file.mtimeMs).toISOString(),
    details: {
      format: 'gguf',
      family: facts.architecture,
      families: [facts.architecture],
      parameterSize: formatParameterCount(facts.parameterCount),
      quantizationLevel: facts.quantization,
    },
  }
}
