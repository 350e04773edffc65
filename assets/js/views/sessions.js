import { h, clear, link, fmtTime, ioView, table, route } from '../dom.js';
import { api } from '../api.js';
import { pager, rangeParams, rangePicker } from './common.js';

// A session as a conversation: each trace is one turn, its input then its output.
async function one(main, r, id) {
  const s = await api('sessions/' + encodeURIComponent(id));
  const turns = [...s.traces].sort((a, b) => (a.timestamp < b.timestamp ? -1 : a.timestamp > b.timestamp ? 1 : 0));
  const users = [...new Set(turns.map((t) => t.userId).filter(Boolean))];
  main.append(h('div', { class: 'toolbar' }, link(['p', r.project, 'sessions'], '← Sessions'), h('h1', null, 'Session ', h('span', { class: 'mono' }, s.id))),
    h('p', { class: 'muted' }, `${turns.length} traces · created ${fmtTime(s.createdAt)}`, users.length ? ` · ${users.join(', ')}` : ''),
    h('div', { class: 'replay' }, turns.map((t) => h('section', { class: 'turn', 'data-testid': 'turn', 'data-trace-id': t.id },
      h('div', { class: 'turn-head' }, link(['p', r.project, 'traces', t.id], t.name || t.id), ' ',
        h('span', { class: 'muted' }, fmtTime(t.timestamp) + (t.userId ? ' · ' + t.userId : ''))),
      h('div', { class: 'turn-in' }, ioView(t.input, { newTurn: true })),
      h('div', { class: 'turn-out' }, ioView(t.output))))));
  if (!turns.length) main.append(h('p', { class: 'muted' }, 'No traces in this session.'));
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
