import { h, clear, link, fmtTime, table, route } from '../dom.js';
import { api } from '../api.js';
import { pager, rangeParams, rangePicker } from './common.js';

async function one(main, r, id) {
  const s = await api('sessions/' + encodeURIComponent(id));
  main.append(h('div', { class: 'toolbar' }, link(['p', r.project, 'sessions'], '← Sessions'), h('h1', null, 'Session ', h('span', { class: 'mono' }, s.id))),
    h('p', { class: 'muted' }, `${s.traces.length} traces · created ${fmtTime(s.createdAt)}`),
    table([
      { title: 'Time', cell: (t) => fmtTime(t.timestamp) },
      { title: 'Trace', cell: (t) => link(['p', r.project, 'traces', t.id], t.name || t.id) },
      { title: 'User', cell: (t) => t.userId || '' },
    ], s.traces, (t) => { location.hash = route(['p', r.project, 'traces', t.id]); }));
  return {};
}

export async function render(main, r) {
  if (r.rest.length) return one(main, r, r.rest[0]);
  const body = h('div');
  main.append(h('div', { class: 'toolbar' }, h('h1', null, 'Sessions'), rangePicker('sessions', r.query)), body);
  const page = Number(r.query.get('page') || 1);
  const load = async () => {
    const d = await api('sessions', { query: { ...rangeParams(r.query), page, limit: 50 } });
    clear(body).append(table([
      { title: 'Created', cell: (s) => fmtTime(s.createdAt) },
      { title: 'Session', cell: (s) => link(['p', r.project, 'sessions', s.id], s.id) },
      { title: 'Environment', cell: (s) => s.environment },
    ], d.data, (s) => { location.hash = route(['p', r.project, 'sessions', s.id]); }), pager('sessions', r.query, d.meta));
  };
  await load();
  return { refresh: page === 1 ? load : null };
}
