// A bar chart drawn as SVG elements (no library, no inline script or style).
import { svg, fmtCost } from './dom.js';

export function barChart(rows, { value, label, title }) {
  const W = 600, H = 160, pad = 22;
  const max = Math.max(1e-12, ...rows.map(value));
  const bw = rows.length ? (W - 2 * pad) / rows.length : 0;
  const root = svg('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img' });
  root.append(svg('title', null, title || ''));
  rows.forEach((r, i) => {
    const v = value(r);
    const bh = (H - 2 * pad) * (v / max);
    const rect = svg('rect', { class: 'b', x: pad + i * bw + 1, y: H - pad - bh, width: Math.max(1, bw - 2), height: bh });
    rect.append(svg('title', null, `${label(r)}: ${v}`));
    root.append(rect);
  });
  root.append(svg('text', { x: pad, y: 12 }, `max ${Number.isInteger(max) ? max : fmtCost(max)}`));
  if (rows.length) {
    root.append(svg('text', { x: pad, y: H - 6 }, label(rows[0])));
    root.append(svg('text', { x: W - pad, y: H - 6, 'text-anchor': 'end' }, label(rows[rows.length - 1])));
  }
  return root;
}
