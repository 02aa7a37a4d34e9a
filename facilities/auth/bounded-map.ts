/** Names tracked at most; past it the oldest are forgotten (a flood of made-up names stays bounded). */
export const MAX_TRACKED_NAMES = 100_000

/**
 * Sets `key` as the newest entry of a map kept in insertion order, then drops
 * the oldest entries until it holds at most `max`.
 */
export function setNewest<K, V>(map: Map<K, V>, key: K, value: V, max = MAX_TRACKED_NAMES): void {
  map.delete(key) // re-inserted last: the oldest entries are the ones forgotten
  map.set(key, value)
  while (map.size > max) {
    const oldest = map.keys().next()
    if (oldest.done) return
    map.delete(oldest.value)
  }
}
