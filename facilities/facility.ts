import ReadyResource from 'ready-resource'

/**
 * A small service a worker declares and owns: `ready()` runs `_open()` once,
 * `close()` runs `_close()` once; both are safe to call twice. A failed
 * `_open()` must undo its own partial work before it throws.
 */
export abstract class Facility extends ReadyResource {
  abstract readonly name: string
}
