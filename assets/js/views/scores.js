import { h, clear, link, fmtTime, table } from '../dom.js';
import { api } from '../api.js';
import { pager, rangeParams, rangePicker } from './common.js';

export async function render(main, r) {
  const body = h('div');
  main.append(h('div', { class: 'toolbar' }, h('h1', null, 'Scores'), rangePicker('scores', r.query)), body);
  const page = Number(r.query.get('page') || 1);
  const load = async () => {
    const d = await api('scores', { query: { ...rangeParams(r.query), page, limit: 50 } });
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
    ], d.data), pager('scores', r.query, d.meta));
  };
  await load();
  return { refresh: page === 1 ? load : null };
}
