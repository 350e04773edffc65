// One trace: observation tree with a waterfall, and the selected trace/observation in detail.
import { h, clear, link, route, fmtCost, fmtNum, fmtSecs, fmtTime, ioView, jsonView, kv, table } from '../dom.js';
import { api } from '../api.js';
import { scoreForm } from './annotate.js';

// Nodes drawn before "show all": keeps traces with thousands of observations responsive.
const TREE_CAP = 300;

function buildTree(observations) {
  const byId = new Map(observations.map((o) => [o.id, { o, children: [] }]));
  const roots = [];
  for (const n of byId.values()) {
    const p = n.o.parentObservationId && byId.get(n.o.parentObservationId);
    if (p && p !== n) p.children.push(n); else roots.push(n);
  }
  const order = (a, b) => (a.o.startTime < b.o.startTime ? -1 : a.o.startTime > b.o.startTime ? 1 : 0);
  const flat = [];
  const walk = (nodes, depth) => {
    nodes.sort(order);
    for (const n of nodes) { flat.push({ o: n.o, depth }); walk(n.children, depth + 1); }
  };
  walk(roots, 0);
  return flat;
}

function scoreTable(scores) {
  if (!scores.length) return h('p', { class: 'muted' }, 'No scores yet.');
  return table([
    { title: 'Name', cell: (s) => s.name },
    { title: 'Value', cell: (s) => s.stringValue ?? String(s.value) },
    { title: 'Source', cell: (s) => s.source },
    { title: 'On', cell: (s) => s.observationId ? 'observation' : 'trace' },
    { title: 'Comment', cell: (s) => s.comment || '' },
  ], scores.map((s) => ({ ...s, __attrs: { 'data-score-name': s.name } })));
}

// The trace's scores (or one observation's) with the form that adds one.
function scoresSection(t, obs, ctx) {
  const own = obs ? t.scores.filter((s) => s.observationId === obs.id) : t.scores;
  const target = obs ? { traceId: t.id, observationId: obs.id } : { traceId: t.id };
  const again = () => window.dispatchEvent(new HashChangeEvent('hashchange'));
  return [h('h2', null, 'Scores'), h('div', { 'data-testid': 'scores' }, scoreTable(own)),
    scoreForm(target, ctx.me ? ctx.me.email : undefined, again)];
}

function observationDetail(o, project) {
  const isGen = o.type === 'GENERATION' || o.model;
  const parts = [
    h('h2', null, h('span', { class: 'muted' }, o.type + ' '), o.name || o.id),
    kv([
      ['ID', h('code', null, o.id)],
      ['Start', fmtTime(o.startTime)],
      ['End', fmtTime(o.endTime)],
      ['Latency', fmtSecs(o.latency), { 'data-testid': 'obs-latency' }],
      ['Level', h('span', { class: 'level-' + o.level }, o.level)],
      o.statusMessage ? ['Status', o.statusMessage] : null,
      isGen ? ['Model', o.model || '–', { 'data-testid': 'gen-model' }] : null,
      isGen ? ['Time to first token', fmtSecs(o.timeToFirstToken), { 'data-testid': 'gen-ttft' }] : null,
      isGen ? ['Input tokens', fmtNum(o.usage && o.usage.input), { 'data-testid': 'gen-input-tokens', 'data-value': String(o.usage ? o.usage.input : '') }] : null,
      isGen ? ['Output tokens', fmtNum(o.usage && o.usage.output), { 'data-testid': 'gen-output-tokens', 'data-value': String(o.usage ? o.usage.output : '') }] : null,
      isGen ? ['Total cost', fmtCost(o.calculatedTotalCost), { 'data-testid': 'gen-cost', 'data-value': String(o.calculatedTotalCost ?? '') }] : null,
      o.usageEstimated ? ['Usage', 'estimated by tokenizer'] : null,
      o.promptName ? ['Prompt', o.promptId
        ? link(['p', project, 'prompts', o.promptName], `${o.promptName} v${o.promptVersion}`, { version: o.promptVersion })
        : `${o.promptName} v${o.promptVersion ?? '?'}`, { 'data-testid': 'gen-prompt' }] : null,
    ]),
  ];
  if (isGen) {
    const usage = Object.entries(o.usageDetails || {});
    const cost = o.costDetails || {};
    if (usage.length || Object.keys(cost).length) {
      const keys = [...new Set([...usage.map(([k]) => k), ...Object.keys(cost)])];
      parts.push(h('h2', null, 'Usage and cost by key'), table([
        { title: 'Key', cell: (k) => k },
        { title: 'Units', num: true, cell: (k) => fmtNum((o.usageDetails || {})[k]) },
        { title: 'Cost', num: true, cell: (k) => fmtCost(cost[k]) },
      ], keys));
    }
    if (o.modelParameters && Object.keys(o.modelParameters).length) parts.push(h('h2', null, 'Model parameters'), jsonView(o.modelParameters, 1));
  }
  parts.push(h('h2', null, 'Input'), h('div', { 'data-testid': 'input' }, ioView(o.input)));
  parts.push(h('h2', null, 'Output'), h('div', { 'data-testid': 'output' }, ioView(o.output)));
  if (o.metadata && Object.keys(o.metadata).length) parts.push(h('h2', null, 'Metadata'), jsonView(o.metadata, 1));
  return parts;
}

function traceDetail(t, project) {
  return [
    h('h2', null, t.name || t.id),
    kv([
      ['ID', h('code', null, t.id)],
      ['Time', fmtTime(t.timestamp)],
      ['Latency', fmtSecs(t.latency), { 'data-testid': 'trace-latency' }],
      ['Total cost', fmtCost(t.totalCost), { 'data-testid': 'trace-cost', 'data-value': String(t.totalCost) }],
      ['User', t.userId || '–'],
      ['Session', t.sessionId ? link(['p', project, 'sessions', t.sessionId], t.sessionId) : '–'],
      ['Environment', t.environment],
      ['Release / version', `${t.release || '–'} / ${t.version || '–'}`],
      ['Tags', (t.tags || []).map((x) => h('span', { class: 'tag' }, x))],
    ]),
    h('h2', null, 'Input'), h('div', { 'data-testid': 'input' }, ioView(t.input)),
    h('h2', null, 'Output'), h('div', { 'data-testid': 'output' }, ioView(t.output)),
    t.metadata && Object.keys(t.metadata).length ? [h('h2', null, 'Metadata'), jsonView(t.metadata, 1)] : null,
  ];
}

export async function render(main, r, ctx = {}) {
  const [traceId, sub, obsId] = r.rest;
  // The tree needs every observation but none of their inputs and outputs (a trace can hold
  // thousands of multi-MB payloads): those come one observation at a time, when it is opened.
  const path = 'traces/' + encodeURIComponent(traceId);
  const [t, skeleton] = await Promise.all([
    api(path, { query: { fields: 'core,io,scores,metrics' } }),
    api(path, { query: { fields: 'core,observations' } }),
  ]);
  t.observations = skeleton.observations;
  const flat = buildTree(t.observations);
  const starts = t.observations.map((o) => Date.parse(o.startTime));
  const ends = t.observations.map((o) => Date.parse(o.endTime || o.startTime));
  const t0 = Math.min(Date.parse(t.timestamp), ...starts);
  const span = Math.max(1, Math.max(t0 + 1, ...ends) - t0);
  const selected = sub === 'observations' ? obsId : null;

  const tree = h('div', { class: 'tree', 'data-testid': 'tree' });
  const node = (label, kind, depth, start, end, href, isSel, id) => {
    const left = ((start - t0) / span) * 100;
    const width = ((end - start) / span) * 100;
    const bar = h('div', { class: 'bar' });
    // CSSOM, not a style attribute: allowed under style-src 'self'.
    bar.style.left = left + '%';
    bar.style.width = Math.max(0.3, width) + '%';
    const name = h('div', { class: 'name' }, kind ? h('span', { class: 'kind ' + kind }, kind) : null, label);
    name.style.paddingLeft = (depth * 14) + 'px';
    const el = h('a', { class: 'node' + (isSel ? ' selected' : ''), href, 'data-obs-id': id || '' }, name, h('div', { class: 'bar-track' }, bar));
    return el;
  };
  const draw = (n) => {
    clear(tree);
    tree.append(node(t.name || t.id, 'TRACE', 0, t0, t0 + span, route(['p', r.project, 'traces', t.id]), !selected, ''));
    for (const { o, depth } of flat.slice(0, n)) {
      tree.append(node(o.name || o.id, o.type, depth + 1, Date.parse(o.startTime), Date.parse(o.endTime || o.startTime),
        route(['p', r.project, 'traces', t.id, 'observations', o.id]), o.id === selected, o.id));
    }
    if (flat.length > n) tree.append(h('button', { class: 'link', onclick: () => draw(flat.length) }, `show all ${flat.length} observations`));
  };
  draw(TREE_CAP);

  const obs = selected && t.observations.some((o) => o.id === selected)
    ? await api('observations/' + encodeURIComponent(selected)) : null;
  const detail = h('div', { class: 'detail', 'data-testid': 'detail' },
    selected && !obs ? h('p', { class: 'err' }, 'No such observation in this trace.') : null,
    obs ? observationDetail(obs, r.project) : traceDetail(t, r.project),
    selected && !obs ? null : scoresSection(t, obs, ctx));
  main.append(
    h('div', { class: 'toolbar' }, link(['p', r.project, 'traces'], '← Traces'), h('h1', null, 'Trace ', h('span', { class: 'mono' }, t.name || t.id))),
    h('div', { class: 'split' }, tree, detail));
  return {};
}
