import { h, clear, link, fmtCost, fmtSecs, fmtTime, highlight, table, route } from '../dom.js';
import { api, currentProject } from '../api.js';
import { pager, rangeParams, rangePicker } from './common.js';

const FILTERS = [['q', 'Search', 'search'], ['name', 'Name'], ['userId', 'User'], ['sessionId', 'Session'],
  ['tags', 'Tag'], ['environment', 'Environment'], ['model', 'Model'], ['level', 'Level', 'select']];
const LEVELS = ['', 'DEBUG', 'DEFAULT', 'WARNING', 'ERROR'];

// Model and level are properties of observations: they narrow the list through the full-text
// index (a trace matches when one of its observations does), as qualifiers added to `q`.
function searchQuery(query) {
  const parts = [];
  if (query.get('q')) parts.push(query.get('q'));
  if (query.get('model')) parts.push('model:"' + query.get('model').replace(/["\\]/g, '') + '"');
  if (query.get('level')) parts.push('level:' + query.get('level').toLowerCase());
  return parts.join(' ');
}

// The matched snippets when searching, else the text previews.
function ioCell(t, field) {
  const hits = (t.searchHighlights || []).filter((x) => x.field === field);
  if (hits.length) return h('div', { class: 'preview hl', 'data-testid': 'highlight' }, hits.map((x) => highlight(x.snippet)));
  const text = t[field + 'Preview'];
  return text ? h('div', { class: 'preview', title: text }, text) : '';
}

export async function render(main, r) {
  const inputs = {};
  const form = h('form', { class: 'toolbar', id: 'trace-filters' },
    FILTERS.map(([k, title, type]) => {
      inputs[k] = type === 'select'
        ? h('select', { name: k, 'aria-label': title }, LEVELS.map((l) => {
          const o = h('option', { value: l }, l || 'Any level');
          if (l === (r.query.get(k) || '')) o.selected = true;
          return o;
        }))
        : h('input', { type: type || 'text', name: k, placeholder: title, 'aria-label': title, value: r.query.get(k) || '' });
      return inputs[k];
    }),
    rangePicker('traces', r.query),
    h('button', { type: 'submit' }, 'Apply'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const q = {};
    for (const [k] of FILTERS) if (inputs[k].value.trim()) q[k] = inputs[k].value.trim();
    if (r.query.get('range')) q.range = r.query.get('range');
    location.hash = route(['p', currentProject(), 'traces'], q);
  });
  const body = h('div');
  main.append(h('h1', null, 'Traces'), form, body);
  const page = Number(r.query.get('page') || 1);
  const load = async () => {
    const query = { ...rangeParams(r.query), page, limit: 50, fields: 'core,metrics,preview' };
    for (const [k] of FILTERS) if (r.query.get(k) && !['q', 'model', 'level'].includes(k)) query[k] = r.query.get(k);
    query.q = searchQuery(r.query);
    const d = await api('traces', { query });
    clear(body);
    const q = query.q;
    body.append(table([
      { title: 'Time', cell: (t) => fmtTime(t.timestamp) },
      { title: 'Name', cell: (t) => [link(['p', r.project, 'traces', t.id], t.name || t.id),
        (t.searchHighlights || []).filter((x) => x.field !== 'input' && x.field !== 'output')
          .map((x) => h('div', { class: 'preview hl muted', 'data-testid': 'highlight' }, x.field + ': ', highlight(x.snippet)))] },
      { title: 'Input', cell: (t) => ioCell(t, 'input') },
      { title: 'Output', cell: (t) => ioCell(t, 'output') },
      { title: 'User', cell: (t) => t.userId || '' },
      { title: 'Session', cell: (t) => t.sessionId ? link(['p', r.project, 'sessions', t.sessionId], t.sessionId) : '' },
      { title: 'Tags', cell: (t) => (t.tags || []).map((x) => h('span', { class: 'tag' }, x)) },
      { title: 'Latency', num: true, cell: (t) => fmtSecs(t.latency) },
      { title: 'Cost', num: true, cell: (t) => fmtCost(t.totalCost) },
    ], d.data.map((t) => ({ ...t, __attrs: { 'data-trace-id': t.id } })),
    (t) => { location.hash = route(['p', r.project, 'traces', t.id]); }));
    if (!d.data.length) body.append(h('p', { class: 'muted' }, q ? 'No trace matches this search.' : 'No traces in this range.'));
    body.append(pager('traces', r.query, d.meta));
  };
  await load();
  // Live updates only where new traces land: the first page.
  return { refresh: page === 1 ? load : null };
}
