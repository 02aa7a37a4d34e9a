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
