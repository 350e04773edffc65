import { h, clear, link, fmtCost, fmtNum, fmtTime, table } from '../dom.js';
import { api } from '../api.js';
import { rangeParams, rangePicker } from './common.js';

export async function render(main, r) {
  const body = h('div');
  main.append(h('div', { class: 'toolbar' }, h('h1', null, 'Users'), rangePicker('users', r.query)), body);
  const load = async () => {
    const d = await api('users', { query: rangeParams(r.query) });
    clear(body);
    if (d.truncated) body.append(h('div', { class: 'warn' }, 'Showing the 500 users with the most traces.'));
    body.append(table([
      { title: 'User', cell: (u) => link(['p', r.project, 'traces'], u.userId, { userId: u.userId, range: r.query.get('range') || '7d' }) },
      { title: 'Traces', num: true, cell: (u) => fmtNum(u.traces) },
      { title: 'Tokens', num: true, cell: (u) => fmtNum(u.totalTokens) },
      { title: 'Cost', num: true, cell: (u) => fmtCost(u.totalCost) },
      { title: 'First trace', cell: (u) => fmtTime(u.firstTrace) },
      { title: 'Last trace', cell: (u) => fmtTime(u.lastTrace) },
    ], d.data));
    if (!d.data.length) body.append(h('p', { class: 'muted' }, 'No traces with a user id in this range.'));
  };
  await load();
  return { refresh: load };
}
