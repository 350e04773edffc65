// Prompts: the list, and one prompt's versions with labels, content, config and a line diff
// between two versions (computed here, see ../diff.js).
// Routes: #/p/<project>/prompts and #/p/<project>/prompts/<name>?version=N&compare=M
import { h, clear, link, route, fmtTime, jsonView, longText, kv, table } from '../dom.js';
import { api } from '../api.js';
import { lineDiff } from '../diff.js';
import { pager } from './common.js';

function chips(items) {
  return (items || []).map((x) => h('span', { class: 'tag' }, x));
}

// The text a version's content is compared by: the template, or its messages one after another.
export function promptText(p) {
  if (typeof p.prompt === 'string') return p.prompt;
  return (p.prompt || []).map((m) => (m.type === 'placeholder'
    ? `[placeholder: ${m.name}]`
    : `[${m.role}]\n${m.content}`)).join('\n\n');
}

function configText(p) {
  return JSON.stringify(p.config ?? {}, null, 2);
}

function content(p) {
  if (typeof p.prompt === 'string') return longText(p.prompt);
  return h('div', null, (p.prompt || []).map((m) => (m.type === 'placeholder'
    ? h('div', { class: 'msg placeholder' }, h('div', { class: 'role' }, 'placeholder'), h('code', null, m.name))
    : h('div', { class: 'msg role-' + String(m.role).replace(/[^a-z]/g, '') },
      h('div', { class: 'role' }, String(m.role)), longText(m.content)))));
}

function diffView(oldText, newText, testid) {
  const rows = lineDiff(oldText, newText);
  const changed = rows.some((r) => r.op !== 'same');
  const sign = { same: ' ', del: '-', add: '+' };
  return h('div', { class: 'diff', 'data-testid': testid },
    changed ? rows.map((r) => h('div', { class: 'diff-line diff-' + r.op, 'data-op': r.op },
      h('span', { class: 'diff-no' }, r.a ?? ''), h('span', { class: 'diff-no' }, r.b ?? ''),
      h('span', { class: 'diff-sign' }, sign[r.op]), h('span', { class: 'diff-text' }, r.text)))
      : h('p', { class: 'muted' }, 'No differences.'));
}

async function list(main, r) {
  const page = Number(r.query.get('page') || 1);
  const body = h('div');
  main.append(h('h1', null, 'Prompts'), body);
  const d = await api('prompts', { query: { page, limit: 50 } });
  body.append(table([
    { title: 'Name', cell: (p) => link(['p', r.project, 'prompts', p.name], p.name) },
    { title: 'Type', cell: (p) => p.type },
    { title: 'Versions', num: true, cell: (p) => String(p.versions.length) },
    { title: 'Labels', cell: (p) => chips(p.labels) },
    { title: 'Tags', cell: (p) => chips(p.tags) },
    { title: 'Updated', cell: (p) => fmtTime(p.lastUpdatedAt) },
  ], d.data.map((p) => ({ ...p, __attrs: { 'data-prompt': p.name } })),
  (p) => { location.hash = route(['p', r.project, 'prompts', p.name]); }));
  if (!d.data.length) {
    body.append(h('p', { class: 'muted' }, 'No prompts yet. Create them with the Langfuse SDKs (create_prompt) or POST /api/public/v2/prompts.'));
  }
  body.append(pager('prompts', r.query, d.meta));
}

async function detail(main, r, name) {
  const { data: versions } = await api('prompts/' + encodeURIComponent(name) + '/versions');
  const newest = versions[versions.length - 1];
  const wanted = Number(r.query.get('version'));
  const current = versions.find((v) => v.version === wanted) || newest;
  const to = (q) => route(['p', r.project, 'prompts', name], q);
  const older = versions.filter((v) => v.version < current.version);
  const compareParam = r.query.get('compare');
  const base = compareParam === 'none' ? null
    : versions.find((v) => v.version === Number(compareParam) && v.version !== current.version)
      || older[older.length - 1] || null;

  const list = h('div', { class: 'tree', 'data-testid': 'prompt-versions' },
    [...versions].reverse().map((v) => h('a', {
      class: 'node version' + (v.version === current.version ? ' selected' : ''),
      href: to({ version: v.version }), 'data-version': String(v.version),
    }, h('div', { class: 'name' }, h('strong', null, 'v' + v.version), ' ', chips(v.labels)),
    h('div', { class: 'muted' }, v.commitMessage || fmtTime(v.createdAt)))));

  const picker = h('select', { 'aria-label': 'Compare with', 'data-testid': 'compare',
    onchange: (e) => { location.hash = to({ version: current.version, compare: e.target.value }); } },
  h('option', { value: 'none' }, 'nothing'),
  versions.filter((v) => v.version !== current.version).map((v) => {
    const o = h('option', { value: String(v.version) }, 'v' + v.version);
    if (base && v.version === base.version) o.selected = true;
    return o;
  }));
  if (!base) picker.value = 'none';

  const panel = h('div', { class: 'detail', 'data-testid': 'prompt-detail' },
    h('h2', null, `Version ${current.version}`),
    kv([
      ['Type', current.type],
      ['Labels', chips(current.labels), { 'data-testid': 'prompt-labels' }],
      ['Tags', chips(current.tags)],
      ['Created', `${fmtTime(current.createdAt)} by ${current.createdBy || '–'}`],
      ['Updated', fmtTime(current.updatedAt)],
      current.commitMessage ? ['Commit message', current.commitMessage] : null,
      ['ID', h('code', null, current.id)],
    ]),
    h('h2', null, 'Prompt'), h('div', { 'data-testid': 'prompt-content' }, content(current)),
    h('h2', null, 'Config'), jsonView(current.config, 2),
    h('div', { class: 'toolbar diff-toolbar' }, h('h2', null, `Changes from`), picker,
      base ? h('span', { class: 'muted' }, `v${base.version} → v${current.version}`) : null),
    base ? [
      diffView(promptText(base), promptText(current), 'prompt-diff'),
      configText(base) !== configText(current)
        ? [h('h2', null, 'Config changes'), diffView(configText(base), configText(current), 'config-diff')] : null,
    ] : null);

  main.append(
    h('div', { class: 'toolbar' }, link(['p', r.project, 'prompts'], '← Prompts'),
      h('h1', null, 'Prompt ', h('span', { class: 'mono' }, name))),
    h('div', { class: 'split' }, list, panel));
}

export async function render(main, r) {
  if (r.rest.length) await detail(main, r, r.rest[0]); else await list(main, r);
  // Prompts change through the API, not through ingestion: nothing to refresh live.
  return {};
}
