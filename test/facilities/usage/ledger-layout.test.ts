import test from 'brittle'
import { utcDay, utcMonth } from '../../../facilities/usage/ledger-layout.js'

const iso = (ts: number) => new Date(ts).toISOString().slice(0, 10)

test('ledger layout: utcDay is the ISO date of any time in years 0-9999', (t) => {
  const edges = [
    0,
    -1,
    Date.parse('0000-01-01T00:00:00Z'),
    Date.parse('0000-03-01T00:00:00Z') - 1,
    Date.UTC(1900, 1, 28, 23, 59, 59, 999),
    Date.UTC(2000, 1, 29),
    Date.UTC(2024, 1, 29, 12),
    Date.UTC(2024, 11, 31, 23, 59, 59, 999),
    Date.UTC(2025, 0, 1),
    Date.UTC(2100, 2, 1),
    Date.UTC(9999, 11, 31, 23, 59, 59, 999),
  ]
  for (const ts of edges) t.is(utcDay(ts), iso(ts), `${ts}`)
  const min = Date.parse('0000-01-01T00:00:00Z')
  const max = Date.UTC(9999, 11, 31, 23, 59, 59, 999)
  let wrong = 0
  for (let i = 0; i < 200_000; i++) {
    const ts = Math.floor(min + Math.random() * (max - min))
    if (utcDay(ts) !== iso(ts)) wrong++
  }
  t.is(wrong, 0, '200,000 random times agree with toISOString')
  t.is(utcMonth(Date.UTC(2026, 11, 6, 21)), '2026-12')
})

test('ledger layout: utcDay truncates as Date does and refuses what Date refuses', (t) => {
  for (const ts of [-0.5, -86_400_000.5, 1.9, 86_399_999.9]) t.is(utcDay(ts), iso(ts), `${ts}`)
  for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, 8.64e15 + 1]) {
    let thrown: unknown = null
    try {
      utcDay(bad)
    } catch (err) {
      thrown = err
    }
    t.ok(thrown instanceof RangeError, `${bad}: RangeError, as Date gives`)
  }
})
