import { h, clear, link, fmtCost, fmtNum, fmtSecs, table } from '../dom.js';
import { api } from '../api.js';
import { barChart } from '../chart.js';
import { rangeParams, rangePicker } from './common.js';

function card(label, value, testid, raw) {
  return h('div', { class: 'card' }, h('div', { class: 'label' }, label),
    h('div', { class: 'value', 'data-testid': testid, 'data-value': raw === undefined ? '' : String(raw) }, value));
}

export async function render(main, r) {
  const body = h('div');
  main.append(h('div', { class: 'toolbar' }, h('h1', null, 'Overview'), rangePicker('overview', r.query)), body);
  const load = async () => {
    const d = await api('overview', { query: rangeParams(r.query) });
    clear(body);
    if (d.unpricedModels.length) {
      body.append(h('div', { class: 'warn', 'data-testid': 'unpriced' }, 'No price known for: ',
        d.unpricedModels.map((u) => `${u.model} (${u.observations})`).join(', '),
        '. Their cost is not included.'));
    }
    body.append(h('div', { class: 'cards' },
      card('Traces', fmtNum(d.traces), 'total-traces', d.traces),
      card('Total cost', fmtCost(d.totalCost), 'total-cost', d.totalCost),
      card('Observations', fmtNum(d.observations), 'total-observations', d.observations),
      card('Errors', fmtNum(d.errors.count), 'total-errors', d.errors.count),
      card('Generation latency p50', fmtSecs(d.latency.p50), 'p50'),
      card('p90', fmtSecs(d.latency.p90), 'p90'),
      card('p95', fmtSecs(d.latency.p95), 'p95'),
      card('p99', fmtSecs(d.latency.p99), 'p99')));
    // Bars are hours, days, weeks or months, whichever keeps the range under ~100 bars.
    const when = (x) => { const t = new Date(x.start); return d.granularity === 'hour' ? t.toLocaleString() : t.toLocaleDateString(); };
    body.append(h('h2', null, 'Traces over time'),
      barChart(d.timeline, { value: (x) => x.traces, label: when, title: 'Traces over time' }));
    body.append(h('h2', null, 'Cost over time'),
      barChart(d.timeline, { value: (x) => x.totalCost, label: when, title: 'Cost over time' }));
    body.append(h('h2', null, 'Models'), table([
      { title: 'Model', cell: (m) => m.model },
      { title: 'Generations', num: true, cell: (m) => fmtNum(m.observations) },
      { title: 'Input tokens', num: true, cell: (m) => fmtNum(m.inputTokens) },
      { title: 'Output tokens', num: true, cell: (m) => fmtNum(m.outputTokens) },
      { title: 'Total tokens', num: true, cell: (m) => fmtNum(m.totalTokens) },
      { title: 'Cost', num: true, cell: (m) => fmtCost(m.totalCost) },
      { title: 'Latency p50', num: true, cell: (m) => fmtSecs(m.latencyP50) },
      { title: 'Latency p95', num: true, cell: (m) => fmtSecs(m.latencyP95) },
    ], d.models.map((m) => ({ ...m, __attrs: { 'data-model': m.model } }))));
    if (d.errors.recent.length) {
      body.append(h('h2', null, 'Recent errors'), table([
        { title: 'Time', cell: (e) => new Date(e.startTime).toLocaleString() },
        { title: 'Observation', cell: (e) => link(['p', r.project, 'traces', e.traceId, 'observations', e.observationId], e.name || e.observationId) },
        { title: 'Message', cell: (e) => e.statusMessage || '' },
      ], d.errors.recent));
    }
  };
  await load();
  return { refresh: load };
}
