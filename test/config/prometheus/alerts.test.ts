import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import test from 'brittle'
import { ERROR_CODES } from '../../../kernel/errors.js'
import { prometheusTest, promtool, REPO, said } from '../../helpers/prometheus.js'

const ALERTS = join(REPO, 'config/prometheus/alerts.yml')
const RULES_TEST = join(REPO, 'test/fixtures/prometheus/alerts.test.yml')
const EXAMPLE = join(REPO, 'config/prometheus/prometheus.yml.example')

prometheusTest(
  'alerts: promtool checks the rules and their unit tests pass',
  { timeout: 60_000 },
  async (t) => {
    const check = promtool(['check', 'rules', ALERTS])
    t.is(check.status, 0, said('promtool check rules', check))
    const found = /SUCCESS: (\d+) rules found/.exec(check.stdout)
    t.ok(found && Number(found[1]) >= 8, `the rules are all there (${found?.[1]})`)

    // Fires on synthetic bad series, stays quiet on healthy ones (test/fixtures/prometheus/alerts.test.yml).
    const unit = promtool(['test', 'rules', RULES_TEST])
    t.is(unit.status, 0, said('promtool test rules', unit))
    t.ok(unit.stdout.includes('SUCCESS'), 'the rule tests pass')

    const config = promtool(['check', 'config', EXAMPLE])
    t.is(config.status, 0, said('promtool check config on the example (and the rules it loads)', config))
  },
)

prometheusTest(
  'alerts: a broken rule file is refused (the check can fail)',
  { timeout: 30_000 },
  async (t) => {
    const broken = join(await t.tmp(), 'broken.yml')
    await writeFile(
      broken,
      'groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: sum(rate(x[5m]) >\n',
    )
    t.not(promtool(['check', 'rules', broken]).status, 0, 'promtool refuses a rule that does not parse')
  },
)

// No binary needed: the server-error alert names exactly the codes whose HTTP status is 5xx.
test('alerts: the server-error ratio counts every 5xx code and no other', async (t) => {
  const text = await readFile(ALERTS, 'utf8')
  const match = /code=~"([^"]+)"/.exec(text)
  t.ok(match, 'the alert matches codes by a regex')
  const listed = (match?.[1] ?? '').split('|').sort()
  const fivexx = Object.entries(ERROR_CODES)
    .filter(([, status]) => status >= 500)
    .map(([code]) => code)
    .sort()
  t.alike(listed, fivexx, 'the codes of kernel/errors.ts with a 5xx status')
})
