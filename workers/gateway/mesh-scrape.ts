import {
  exposeLabelled,
  type LabelledFamilies,
  type MetricFamily,
} from '../../facilities/metrics/exposition.js'
import { PROCESSOR_PREFIX } from '../../facilities/metrics/processor-metrics.js'
import type { NetFacility } from '../../facilities/net/net.facility.js'
import type { RouterFacility } from '../../facilities/router/router.facility.js'
import type { ProcessorMetricsReply } from '../processor/processor-observability.js'

/** How long a scrape waits for each processor's series; one that is later is left out. */
export const PROCESSOR_SCRAPE_TIMEOUT_MS = 1_500
/** How much of a processor's key names it in the `processor` label. */
export const PROCESSOR_LABEL_HEX = 16

/**
 * One scrape's view of the mesh: each live processor's own series (`llm_mesh_processor_*`),
 * asked for over RPC (`metrics`) in parallel, in Prometheus's text format with the label
 * `processor="<first 16 hex of its key>"`. A processor that does not answer within
 * PROCESSOR_SCRAPE_TIMEOUT_MS is left out and reported to `failed`.
 */
export async function scrapeProcessors(
  router: RouterFacility | null,
  net: NetFacility | null,
  failed: () => void,
): Promise<string> {
  if (!router || !net) return ''
  const entries = router.live()
  const replies = await Promise.all(
    entries.map(async (entry): Promise<LabelledFamilies | null> => {
      try {
        const reply = await net
          .peer(entry.publicKey, entry.id)
          .request<ProcessorMetricsReply>('metrics', null, { timeout: PROCESSOR_SCRAPE_TIMEOUT_MS })
        const families = Array.isArray(reply?.metrics) ? reply.metrics : []
        return {
          value: entry.id.slice(0, PROCESSOR_LABEL_HEX),
          // A processor's answer names its own series only: nothing it sends can pass as the gateway's.
          families: families.filter(
            (f: MetricFamily) => typeof f?.name === 'string' && f.name.startsWith(PROCESSOR_PREFIX),
          ),
        }
      } catch {
        failed()
        return null
      }
    }),
  )
  return exposeLabelled(
    'processor',
    replies.filter((r): r is LabelledFamilies => r !== null),
  )
}
