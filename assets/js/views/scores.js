// Scores of the project, filterable by name, source, data type and value; and the score configs
// that manual annotation and evaluators write against (create, archive, restore).
import { h, clear, link, fmtTime, table, route } from '../dom.js';
import { api, currentProject } from '../api.js';
import { pager, rangeParams, rangePicker } from './common.js';

const SOURCES = ['', 'API', 'ANNOTATION', 'EVAL'];
const TYPES = ['', 'NUMERIC', 'BOOLEAN', 'CATEGORICAL', 'TEXT', 'CORRECTION'];
const OPERATORS = ['>=', '<=', '=', '>', '<', '!='];

function options(values, selected, blank) {
  return values.map((v) => {
    const o = h('option', { value: v }, v || blank);
    if (v === selected) o.selected = true;
    return o;
  });
}

function filterForm(r) {
  const q = r.query;
  const name = h('input', { type: 'text', name: 'name', placeholder: 'Name', 'aria-label': 'Name', value: q.get('name') || '' });
  const source = h('select', { name: 'source', 'aria-label': 'Source' }, options(SOURCES, q.get('source') || '', 'any source'));
  const dataType = h('select', { name: 'dataType', 'aria-label': 'Data type' }, options(TYPES, q.get('dataType') || '', 'any type'));
  const operator = h('select', { name: 'operator', 'aria-label': 'Operator' }, options(OPERATORS, q.get('operator') || '>=', ''));
  const value = h('input', { type: 'number', step: 'any', name: 'value', placeholder: 'value', 'aria-label': 'Value', value: q.get('value') || '' });
  const form = h('form', { class: 'toolbar', id: 'score-filters' }, name, source, dataType, operator, value,
    rangePicker('scores', q), h('button', { type: 'submit' }, 'Apply'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const next = {};
    if (name.value.trim()) next.name = name.value.trim();
    if (source.value) next.source = source.value;
    if (dataType.value) next.dataType = dataType.value;
    if (value.value !== '') { next.operator = operator.value; next.value = value.value; }
    if (q.get('range')) next.range = q.get('range');
    location.hash = route(['p', currentProject(), 'scores'], next);
  });
  return form;
}

function describe(c) {
  if (c.dataType === 'NUMERIC') {
    const lo = c.minValue ?? '-∞';
    const hi = c.maxValue ?? '∞';
    return `${lo} … ${hi}`;
  }
  if (c.categories) return c.categories.map((x) => `${x.label}=${x.value}`).join(', ');
  return '';
}

// "good=1, bad=0" → [{label, value}]
function parseCategories(text) {
  return text.split(',').map((s) => s.trim()).filter(Boolean).map((pair, i) => {
    const at = pair.lastIndexOf('=');
    if (at < 0) return { label: pair, value: i };
    return { label: pair.slice(0, at).trim(), value: Number(pair.slice(at + 1)) };
  });
}

function configSection() {
  const list = h('div', { 'data-testid': 'score-configs' });
  const msg = h('span', { class: 'err' });
  const name = h('input', { type: 'text', placeholder: 'name', 'aria-label': 'Config name', maxlength: '35' });
  const type = h('select', { 'aria-label': 'Config data type' }, options(['NUMERIC', 'BOOLEAN', 'CATEGORICAL', 'TEXT'], 'NUMERIC', ''));
  const min = h('input', { type: 'number', step: 'any', placeholder: 'min', 'aria-label': 'Minimum' });
  const max = h('input', { type: 'number', step: 'any', placeholder: 'max', 'aria-label': 'Maximum' });
  const cats = h('input', { type: 'text', placeholder: 'good=1, bad=0', 'aria-label': 'Categories' });
  const desc = h('input', { type: 'text', placeholder: 'description (optional)', 'aria-label': 'Description' });
  const load = async () => {
    const d = await api('score-configs', { query: { limit: 100 } });
    clear(list).append(d.data.length ? table([
      { title: 'Name', cell: (c) => c.name },
      { title: 'Type', cell: (c) => c.dataType },
      { title: 'Values', cell: (c) => describe(c) },
      { title: 'Description', cell: (c) => c.description || '' },
      { title: 'State', cell: (c) => c.isArchived ? 'archived' : 'active' },
      { title: '', cell: (c) => h('button', { onclick: async () => {
        try { await api('score-configs/' + encodeURIComponent(c.id), { method: 'PATCH', body: { isArchived: !c.isArchived } }); } catch (err) { msg.textContent = err.message; }
        await load();
      } }, c.isArchived ? 'Restore' : 'Archive') },
    ], d.data) : h('p', { class: 'muted' }, 'No score configs yet.'));
  };
  const create = async (e) => {
    e.preventDefault();
    msg.textContent = '';
    const body = { name: name.value.trim(), dataType: type.value };
    if (desc.value.trim()) body.description = desc.value.trim();
    if (type.value === 'NUMERIC') {
      if (min.value !== '') body.minValue = Number(min.value);
      if (max.value !== '') body.maxValue = Number(max.value);
    }
    if (type.value === 'CATEGORICAL') body.categories = parseCategories(cats.value);
    try {
      await api('score-configs', { method: 'POST', body });
      name.value = ''; min.value = ''; max.value = ''; cats.value = ''; desc.value = '';
      await load();
    } catch (err) {
      msg.textContent = err.message;
    }
  };
  const form = h('form', { class: 'toolbar', id: 'new-score-config' }, name, type, min, max, cats, desc,
    h('button', { class: 'primary', type: 'submit' }, 'Create config'), msg);
  form.addEventListener('submit', create);
  return { el: h('div', null, h('h2', null, 'Score configs'), form, list), load };
}

export async function render(main, r) {
  const body = h('div');
  const configs = configSection();
  main.append(h('h1', null, 'Scores'), filterForm(r), body, configs.el);
  const page = Number(r.query.get('page') || 1);
  const load = async () => {
    const query = { ...rangeParams(r.query), page, limit: 50 };
    for (const k of ['name', 'source', 'dataType', 'operator', 'value']) if (r.query.get(k)) query[k] = r.query.get(k);
    const d = await api('scores', { query });
    clear(body).append(table([
      { title: 'Time', cell: (s) => fmtTime(s.timestamp) },
      { title: 'Name', cell: (s) => s.name },
      { title: 'Value', num: true, cell: (s) => s.stringValue ?? String(s.value) },
      { title: 'Type', cell: (s) => s.dataType },
      { title: 'Source', cell: (s) => s.source },
      { title: 'Target', cell: (s) => s.traceId
        ? link(['p', r.project, 'traces', s.traceId, ...(s.observationId ? ['observations', s.observationId] : [])], s.observationId || s.traceId)
        : (s.sessionId ? link(['p', r.project, 'sessions', s.sessionId], s.sessionId) : (s.datasetRunId || '')) },
      { title: 'Comment', cell: (s) => s.comment || '' },
    ], d.data.map((s) => ({ ...s, __attrs: { 'data-score-id': s.id } }))), pager('scores', r.query, d.meta));
    if (!d.data.length) body.append(h('p', { class: 'muted' }, 'No score matches.'));
  };
  await Promise.all([load(), configs.load()]);
  return { refresh: page === 1 ? load : null };
}
