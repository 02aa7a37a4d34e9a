import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import test, { type Test } from 'brittle'
import type { GatewayWorker } from '../../workers/gateway/gateway.worker.js'
import {
  apiKeyFor,
  closedPort,
  type SpawnedWorker,
  spawnProcessor,
  startGateway,
  testnet,
  until,
} from '../helpers/mesh.js'
import {
  dashboardQueries,
  exposedNames,
  type FoundQuery,
  metricNamesIn,
  prometheusTest,
  promtool,
  REPO,
  ruleExprs,
  said,
  startPrometheus,
} from '../helpers/prometheus.js'

const DASHBOARD = join(REPO, 'docs/grafana/llm-mesh-dashboard.json')
const ALERTS = join(REPO, 'config/prometheus/alerts.yml')

/** Series Prometheus makes itself for every target. */
const PROMETHEUS_OWN = ['up']

interface Mesh {
  gateway: GatewayWorker
  url: string
  key: string
  processors: { worker: SpawnedWorker; id: string; metricsUrl: string }[]
}

/**
 * A gateway with HTTP and `n` echo processors (each with its own metrics port when they have
 * one), started side by side; `beside(gatewayUrl)` runs meanwhile.
 */
async function mesh<B>(
  t: Test,
  n: number,
  beside: (url: string) => Promise<B>,
): Promise<Mesh & { beside: B }> {
  const { bootstrap } = await testnet(t)
  const gateway = await startGateway(t, bootstrap, { http: { enabled: true, port: 0 } })
  const url = gateway.httpUrl as string
  const processor = async (): Promise<Mesh['processors'][number]> => {
    const port = await closedPort()
    const args = ['--store', await t.tmp(), '--backend', 'echo', '--metrics-port', String(port)]
    const worker = await spawnProcessor(t, bootstrap, args)
    const metricsUrl = `http://127.0.0.1:${port}/metrics`
    return { worker, id: worker.publicKey.slice(0, 16), metricsUrl }
  }
  const [processors, besides] = await Promise.all([
    Promise.all(Array.from({ length: n }, processor)),
    beside(url),
  ])
  t.ok(await until(() => gateway.router.size === n, 10_000), `the gateway sees ${n} processors`)
  return { gateway, url, key: await apiKeyFor(gateway), processors, beside: besides }
}

/** One Ollama chat through the gateway's HTTP API. */
async function chat(m: Mesh): Promise<number> {
  const res = await fetch(`${m.url}/api/chat`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${m.key}` },
    body: JSON.stringify({
      model: 'echo',
      messages: [{ role: 'user', content: 'hello there' }],
      stream: false,
    }),
  })
  await res.arrayBuffer()
  return res.status
}

const metricsText = async (url: string) => (await fetch(url)).text()

/** `promtool check metrics` on a /metrics text: exit 0 and no lint problem printed. */
function checkMetrics(t: Test, who: string, text: string): void {
  const run = promtool(['check', 'metrics'], text)
  t.is(run.status, 0, said(`promtool check metrics: ${who}`, run))
  t.is(`${run.stdout}${run.stderr}`.trim(), '', `no lint problem in ${who}'s /metrics`)
}

/** A dashboard query as Prometheus can run it: Grafana's variables given values. */
const runnable = (expr: string) =>
  expr.replaceAll('$__rate_interval', '1m').replace(/\$\{?(instance|processor)\}?/g, '.*')

type Series = Record<string, string>[]

prometheusTest(
  'prometheus: a real server finds every worker through the gateway',
  { timeout: 90_000 },
  async (t) => {
    const target = (url: string) => new URL(url).host
    const m = await mesh(t, 2, (url) =>
      startPrometheus(
        t,
        [
          'global: { scrape_interval: 1s, evaluation_interval: 1s }',
          `rule_files: [${JSON.stringify(ALERTS)}]`,
          'scrape_configs:',
          '  - job_name: llm-mesh-gateway',
          `    static_configs: [{ targets: [${JSON.stringify(target(url))}] }]`,
          '',
        ].join('\n'),
      ),
    )
    const prom = m.beside
    for (let i = 0; i < 2; i++) t.is(await chat(m), 200, `request ${i + 1} answered`)

    checkMetrics(t, 'the gateway', await metricsText(`${m.url}/metrics`))
    for (const p of m.processors) checkMetrics(t, `processor ${p.id}`, await metricsText(p.metricsUrl))

    const series = (match: string) => prom.api<Series>('/api/v1/series', { 'match[]': match })
    const gatewaySeries = () => series('{__name__=~"llm_mesh_gateway_.+"}')
    const processorSeries = (id: string) => series(`{__name__=~"llm_mesh_processor_.+",processor="${id}"}`)
    const found = await until(
      async () => {
        if ((await gatewaySeries()).length === 0) return false
        for (const p of m.processors) if ((await processorSeries(p.id)).length === 0) return false
        return true
      },
      20_000,
      250,
    )
    const targets = await prom.api<{ activeTargets: { health: string; lastError: string }[] }>(
      '/api/v1/targets',
    )
    t.is(targets.activeTargets.length, 1, 'one scrape target: the gateway')
    t.is(
      targets.activeTargets[0]?.health,
      'up',
      `the gateway's scrape succeeds ${targets.activeTargets[0]?.lastError}`,
    )
    const gw = await gatewaySeries()
    t.ok(gw.length > 0, `llm_mesh_gateway_* series in Prometheus (${gw.length})`)
    t.ok(
      gw.every((s) => s.job === 'llm-mesh-gateway' && s.instance === target(m.url)),
      'all from the gateway target',
    )
    for (const p of m.processors) {
      const own = await processorSeries(p.id)
      t.ok(
        own.length > 0,
        `llm_mesh_processor_* series of processor ${p.id} through the gateway (${own.length})`,
      )
    }
    if (!found) t.comment(`prometheus log:\n${prom.log()}`)

    const answered = async () =>
      (
        await prom.api<{ result: { value: [number, string] }[] }>('/api/v1/query', {
          query: 'sum(llm_mesh_gateway_requests_total{api="ollama",code="ok"})',
        })
      ).result[0]?.value[1]
    t.ok(
      await until(async () => (await answered()) === '2', 5_000, 250),
      'Prometheus counts the two answered requests',
    )

    await queriesRun(t, prom.api.bind(prom))
    await alertsLive(t, m, prom.api.bind(prom))
  },
)

type Api = <R>(path: string, params?: Record<string, string>) => Promise<R>

/** Every dashboard query parses and evaluates on the real server. */
async function queriesRun(t: Test, api: Api): Promise<void> {
  const queries = dashboardQueries(JSON.parse(await readFile(DASHBOARD, 'utf8')))
  const failed: string[] = []
  for (const q of queries) {
    await api('/api/v1/query', { query: runnable(q.expr) }).catch((err: Error) =>
      failed.push(`${q.where}: ${err.message}`),
    )
  }
  t.alike(failed, [], `all ${queries.length} dashboard queries run on Prometheus`)
}

interface Rule {
  name: string
  health: string
  state: string
}

/** The alert rules load and evaluate; none is active on a healthy mesh; losing every processor trips one. */
async function alertsLive(t: Test, m: Mesh, api: Api): Promise<void> {
  const rules = async () =>
    (await api<{ groups: { rules: Rule[] }[] }>('/api/v1/rules', { type: 'alert' })).groups.flatMap(
      (g) => g.rules,
    )
  t.ok(
    await until(async () => (await rules()).every((r) => r.health === 'ok'), 10_000, 250),
    'every alert rule evaluates without error',
  )
  const loaded = await rules()
  t.ok(loaded.length >= 8, `the alert rules are loaded (${loaded.length})`)
  // Scrapes from before the processors joined may have set one pending: it settles once they are seen.
  const active = async () => (await rules()).filter((r) => r.state !== 'inactive').map((r) => r.name)
  await until(async () => (await active()).length === 0, 10_000, 250)
  t.alike(await active(), [], 'no alert is pending or firing on a healthy mesh')
  for (const p of m.processors) await p.worker.kill()
  const noProcessor = async () => (await rules()).find((r) => r.name === 'LlmMeshNoServingProcessor')?.state
  t.ok(
    await until(async () => (await noProcessor()) === 'pending', 15_000, 250),
    'with every processor gone, LlmMeshNoServingProcessor is pending',
  )
}

test('prometheus: the dashboard and the alert rules name only series the mesh exports', {
  timeout: 60_000,
}, async (t) => {
  t.alike(
    metricNamesIn('sum by (le) (rate(lm_mesh_typo_bucket{a="b}"}[$__rate_interval])) / on(x) group_left up'),
    ['lm_mesh_typo_bucket', 'up'],
    'the name reader finds a typo (the check can fail)',
  )
  const m = await mesh(t, 1, async () => null)
  t.is(await chat(m), 200, 'a request answered')
  const live = exposedNames(await metricsText(`${m.url}/metrics`))
  for (const p of m.processors)
    if (p.metricsUrl) for (const n of exposedNames(await metricsText(p.metricsUrl))) live.add(n)
  t.ok(live.has('llm_mesh_gateway_requests_total'), `the live names are read (${live.size})`)

  const dashboard = JSON.parse(await readFile(DASHBOARD, 'utf8')) as DashboardShape
  dashboardShape(t, dashboard)
  const queries: FoundQuery[] = [
    ...dashboardQueries(dashboard),
    ...ruleExprs(await readFile(ALERTS, 'utf8')).map((q) => ({ ...q, where: `alerts.yml ${q.where}` })),
  ]
  t.ok(queries.length >= 40, `queries found in the dashboard and the rules (${queries.length})`)
  const known = new Set([...live, ...PROMETHEUS_OWN])
  const unknown = queries.flatMap((q) =>
    metricNamesIn(q.expr)
      .filter((n) => !known.has(n))
      .map((n) => `${q.where}: ${n}`),
  )
  t.alike(unknown, [], 'every metric name is exported by a live gateway or processor')
  t.ok(
    queries.every((q) => metricNamesIn(q.expr).length > 0),
    'every query reads some series',
  )
})

interface DashboardShape {
  uid?: string
  title?: string
  panels?: { id: number; type: string; targets?: { datasource?: { uid?: string } }[] }[]
  templating?: { list?: { name: string; type: string }[] }
}

/** What Grafana needs to import it anywhere: ids unique, every graph queried through the chosen data source. */
function dashboardShape(t: Test, d: DashboardShape): void {
  t.ok(d.uid && d.title, 'a uid and a title')
  const panels = d.panels ?? []
  t.is(new Set(panels.map((p) => p.id)).size, panels.length, `panel ids unique (${panels.length} panels)`)
  const graphs = panels.filter((p) => p.type !== 'row')
  t.ok(
    graphs.every((p) => (p.targets?.length ?? 0) > 0),
    'every panel has a query',
  )
  // biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's variable syntax, not a JS template
  const chosen = '${datasource}'
  t.ok(
    graphs.every((p) => p.targets?.every((q) => q.datasource?.uid === chosen)),
    'every query uses the dashboard data source variable',
  )
  t.ok(
    d.templating?.list?.some((v) => v.name === 'datasource' && v.type === 'datasource'),
    'a data source variable, picked at import',
  )
}
