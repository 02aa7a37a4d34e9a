import { Counter, type Registry } from 'prom-client'
import { baseModel } from '../../kernel/inference.js'

/** The label of every model the mesh does not serve, and of those past the cap. */
export const OTHER_MODEL = 'other'
/** Distinct model labels at most: past it, further models are `other` too. */
export const MAX_MODEL_LABELS = 100

/**
 * A model as a bounded label value: the model's base name when the mesh serves or served it
 * (`isKnown`), else `other` — a caller's free text never becomes a series. At most `max`
 * distinct names; later ones become `other`.
 */
export class ModelLabels {
  private readonly seen = new Set<string>()

  constructor(
    private readonly isKnown: (model: string) => boolean,
    private readonly max = MAX_MODEL_LABELS,
  ) {}

  of(model: string): string {
    const base = baseModel(model)
    if (this.seen.has(base)) return base
    if (this.seen.size >= this.max || !this.isKnown(base)) return OTHER_MODEL
    this.seen.add(base)
    return base
  }
}

type Child = { inc(n?: number): void }

/**
 * A `<name>` counter of tokens by `kind` (prompt, completion) and bounded `model` label, its
 * label children kept per model (no label lookup per request).
 */
export class TokenCounter {
  private readonly counter: Counter<'kind' | 'model'>
  private readonly children = new Map<string, { prompt: Child; completion: Child }>()
  private readonly models: ModelLabels

  constructor(name: string, help: string, register: Registry, isKnownModel: (model: string) => boolean) {
    this.counter = new Counter({ name, help, labelNames: ['kind', 'model'], registers: [register] })
    this.models = new ModelLabels(isKnownModel)
  }

  add(model: string, prompt: number, completion: number): void {
    const label = this.models.of(model)
    let children = this.children.get(label)
    if (!children) {
      children = {
        prompt: this.counter.labels('prompt', label),
        completion: this.counter.labels('completion', label),
      }
      this.children.set(label, children)
    }
    if (prompt > 0) children.prompt.inc(prompt)
    if (completion > 0) children.completion.inc(completion)
  }
}
