// Pieces shared by several views: the time-range picker and pagination.
import { h, route } from '../dom.js';
import { currentProject } from '../api.js';

export const RANGES = [['1h', 'Last hour', 3600e3], ['24h', 'Last 24 hours', 86400e3],
  ['7d', 'Last 7 days', 7 * 86400e3], ['30d', 'Last 30 days', 30 * 86400e3], ['all', 'All time', null]];

// The selected range from the route query (default 7d) as API parameters.
export function rangeParams(query) {
  const key = query.get('range') || '7d';
  const r = RANGES.find(([k]) => k === key) || RANGES[2];
  return r[2] === null ? {} : { fromTimestamp: new Date(Date.now() - r[2]).toISOString() };
}

// A <select> that rewrites the route's `range` parameter.
export function rangePicker(view, query) {
  const key = query.get('range') || '7d';
  return h('select', { 'aria-label': 'Time range', 'data-testid': 'range',
    onchange: (e) => {
      const q = new URLSearchParams(query); q.set('range', e.target.value); q.delete('page');
      location.hash = route(['p', currentProject(), view], Object.fromEntries(q));
    } },
  RANGES.map(([k, title]) => { const o = h('option', { value: k }, title); if (k === key) o.selected = true; return o; }));
}

export function pager(view, query, meta) {
  const page = Number(meta.page || 1);
  const to = (p) => { const q = new URLSearchParams(query); q.set('page', String(p)); return route(['p', currentProject(), view], Object.fromEntries(q)); };
  return h('div', { class: 'pager' },
    page > 1 ? h('a', { href: to(page - 1), 'data-testid': 'prev' }, '← Prev') : null,
    h('span', { class: 'muted' }, `Page ${page} of ${Math.max(1, meta.totalPages || 1)} · ${Number(meta.totalItems || 0).toLocaleString('en-US')} total`),
    page < (meta.totalPages || 1) ? h('a', { href: to(page + 1), 'data-testid': 'next' }, 'Next →') : null);
}
