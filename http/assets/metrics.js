// The Metrics tab: cards with sparklines of the main figures (counters as
// rates) and every metric the node exports, grouped by family.

import { $, h, s } from './dom.js';
import { DASH, isNum, fmtBytes, fmtNum, fmtRate } from './format.js';
import { api } from './api.js';
import { Poller } from './poll.js';
import { drawLines, palette } from './charts.js';
import { parseProm, sumOf } from './prom.js';

const METRIC_SAMPLES = 60;

// What the cards show. `rate` series are counters turned into per-second
// rates between scrapes; the others are gauges shown as they are.
const CARDS = [
  { id: 'ops', title: 'operations / s', rate: true, fmt: fmtRate, series: (ss) => [['all', sumOf(ss, 'p3_operations_total')]] },
  {
    id: 'ops-by-op', title: 'operations / s by op', rate: true, fmt: fmtRate, multi: true,
    series: (ss) => {
      const ops = [...new Set(ss.filter((x) => x.name === 'p3_operations_total').map((x) => x.labels.op ?? ''))].sort();
      return ops.map((op) => [op || '(none)', sumOf(ss, 'p3_operations_total', (l) => (l.op ?? '') === op)]);
    },
  },
  {
    id: 'bytes', title: 'bytes in / out per s', rate: true, fmt: (v) => `${fmtBytes(v)}/s`, multi: true,
    series: (ss) => [['in', sumOf(ss, 'p3_bytes_in_total')], ['out', sumOf(ss, 'p3_bytes_out_total')]],
  },
  { id: 'peers', title: 'connected peers', fmt: fmtNum, series: (ss) => [['peers', sumOf(ss, 'p3_peers_connected')]] },
  { id: 'routing', title: 'routing table size', fmt: fmtNum, series: (ss) => [['routing', sumOf(ss, 'p3_routing_table_size')]] },
  { id: 'locks', title: 'locks held', fmt: fmtNum, series: (ss) => [['locks', sumOf(ss, 'p3_locks_held')]] },
  { id: 'store', title: 'store size', fmt: fmtBytes, series: (ss) => [['store', sumOf(ss, 'p3_store_bytes')]] },
];

const metricHistory = new Map(); // card id -> Map(series key -> [values])
const metricColor = new Map(CARDS.map((c) => [c.id, palette()]));
let prevScrape = null; // { t, values: Map('card/key' -> number) } for rates

export function buildMetricCards() {
  $('#metric-cards').replaceChildren(...CARDS.map((c) => h('div', { class: `card metric${c.multi ? ' multi' : ''}`, id: `metric-${c.id}` },
    h('div', { class: 'label' }, c.title),
    h('div', { class: 'metric-value big' }, DASH),
    s('svg', { class: 'spark' }),
    h('div', { class: 'legend small' }))));
}

async function pollMetrics() {
  const res = await api('/metrics', { raw: true });
  const { samples, types } = parseProm(await res.text());
  const t = performance.now();
  const values = new Map();
  for (const card of CARDS) {
    const hist = metricHistory.get(card.id) || new Map();
    metricHistory.set(card.id, hist);
    for (const [key, v] of card.series(samples)) {
      values.set(`${card.id}/${key}`, v);
      let shown = v;
      if (card.rate) {
        const before = prevScrape && prevScrape.values.get(`${card.id}/${key}`);
        // No rate on the first scrape, and none across a counter reset.
        shown = isNum(v) && isNum(before) && v >= before ? (v - before) / ((t - prevScrape.t) / 1000) : null;
      }
      const arr = hist.get(key) || [];
      arr.push(shown);
      if (arr.length > METRIC_SAMPLES) arr.shift();
      hist.set(key, arr);
    }
  }
  prevScrape = { t, values };
  renderMetricCards();
  renderRawMetrics(samples, types);
}

function renderMetricCards() {
  for (const card of CARDS) {
    const box = $(`#metric-${card.id}`);
    const hist = metricHistory.get(card.id) || new Map();
    const series = [...hist].map(([key, values]) => ({ key, values, color: metricColor.get(card.id)(key) }));
    const current = (key) => { const a = hist.get(key) || []; return a[a.length - 1]; };
    $('.metric-value', box).textContent = bigText(card, series.map((x) => current(x.key)));
    drawLines($('svg.spark', box), series, { capacity: METRIC_SAMPLES, axes: false, fill: !card.multi, minMax: card.minMax });
    $('.legend', box).replaceChildren(...(card.multi ? series.map((x) => h('span', { class: 'legend-item', 'data-key': x.key },
      h('i', { class: 'swatch', style: `background:${x.color}` }), `${x.key} ${card.fmt(current(x.key))}`)) : []));
  }
}

// The big number: the one value, the in/out pair, or the sum of a card's lines.
function bigText(card, currents) {
  if (!currents.some(isNum)) return DASH;
  if (card.id === 'bytes') return `↓ ${card.fmt(currents[0])} · ↑ ${card.fmt(currents[1])}`;
  return card.fmt(currents.filter(isNum).reduce((a, v) => a + v, 0));
}

function renderRawMetrics(samples, types) {
  const families = new Map();
  const familyOf = (name) => {
    if (types.has(name)) return name;
    const base = name.replace(/_(bucket|sum|count)$/, '');
    return types.has(base) ? base : name;
  };
  for (const x of samples) {
    const f = familyOf(x.name);
    if (!families.has(f)) families.set(f, []);
    families.get(f).push(x);
  }
  const labelText = (x) => {
    const ls = Object.entries(x.labels).map(([k, v]) => `${k}="${v}"`).join(', ');
    const suffix = x.name.length > 0 ? x.name.slice(familyOf(x.name).length) : '';
    return `${suffix}${ls ? `{${ls}}` : ''}`;
  };
  const blocks = [...families].sort(([a], [b]) => a.localeCompare(b)).map(([name, xs]) => h('div', { class: 'family', 'data-family': name },
    h('div', { class: 'family-name' }, h('span', { class: 'mono' }, name), types.has(name) ? h('span', { class: 'badge' }, types.get(name)) : null),
    h('ul', {}, xs.map((x) => h('li', {}, h('span', { class: 'mono muted' }, labelText(x) || 'value'), h('span', { class: 'mono num' }, fmtNum(x.value, 3)))))));
  $('#metrics-raw').replaceChildren(...blocks);
  if (!blocks.length) $('#metrics-raw').append(h('div', { class: 'muted' }, 'No metrics yet.'));
}

const metricsPoller = new Poller(pollMetrics, 2000);
export const tab = {
  // A rate across the time the tab was hidden would be an average unlike
  // its neighbours: start counting afresh.
  enter() { prevScrape = null; metricsPoller.start(); },
  leave() { metricsPoller.stop(); },
};
