// LLM-as-a-judge evaluators: list with live status, create and edit, pause/resume, backfill,
// delete, and the latest failed jobs. Everything goes through /api/ui/evaluators, which answers
// exactly as the /api/evaluators JSON API does.
import { h, clear, fmtNum, fmtTime, table } from '../dom.js';
import { api } from '../api.js';

const list = (s) => s.split(',').map((x) => x.trim()).filter(Boolean);
const joined = (a) => (a || []).join(', ');

function field(label, input) {
  return h('label', { class: 'field' }, h('span', { class: 'muted' }, label), input);
}

// The create/edit form; `ev` is the evaluator being edited, or null.
function editor(ev, configs, onSaved, onCancel) {
  const v = ev || { target: 'trace', filter: { sampleRate: 1 }, output: { dataType: 'NUMERIC' }, delaySeconds: 5, variableMapping: {} };
  const f = v.filter || {};
  const o = v.output || {};
  const input = (name, value, attrs = {}) => h('input', { type: 'text', name, 'aria-label': name, value: value ?? '', ...attrs });
  const name = input('name', v.name, { required: true });
  const target = h('select', { name: 'target', 'aria-label': 'target' },
    ['trace', 'observation'].map((t) => { const el = h('option', { value: t }, t); if (t === v.target) el.selected = true; return el; }));
  const prompt = h('textarea', { name: 'prompt', 'aria-label': 'prompt', rows: '6', required: true });
  prompt.value = v.prompt || 'Rate how well the answer responds to the question.\n\nQuestion: {{input}}\nAnswer: {{output}}';
  const mapping = h('textarea', { name: 'variableMapping', 'aria-label': 'variable mapping', rows: '2' });
  mapping.value = Object.entries(v.variableMapping || {}).map(([k, p]) => `${k} = ${p}`).join('\n');
  const names = input('names', joined(f.names));
  const tags = input('tags', joined(f.tags));
  const envs = input('environments', joined(f.environments));
  const types = input('types', joined(f.types));
  const models = input('models', joined(f.models));
  const rate = input('sampleRate', f.sampleRate ?? 1, { type: 'number', step: 'any', min: '0', max: '1' });
  const config = h('select', { name: 'configId', 'aria-label': 'score config' },
    h('option', { value: '' }, '— none: define the score here —'),
    configs.filter((c) => !c.isArchived && c.dataType !== 'TEXT').map((c) => {
      const el = h('option', { value: c.id }, `${c.name} (${c.dataType.toLowerCase()})`);
      if (c.id === o.configId) el.selected = true;
      return el;
    }));
  const scoreName = input('scoreName', o.configId ? '' : o.scoreName);
  const dataType = h('select', { name: 'dataType', 'aria-label': 'data type' },
    ['NUMERIC', 'BOOLEAN', 'CATEGORICAL'].map((t) => { const el = h('option', { value: t }, t); if (t === o.dataType) el.selected = true; return el; }));
  const categories = input('categories', o.configId ? '' : joined(o.categories));
  const min = input('minValue', o.configId ? '' : o.minValue, { type: 'number', step: 'any' });
  const max = input('maxValue', o.configId ? '' : o.maxValue, { type: 'number', step: 'any' });
  const model = input('model', v.model, { placeholder: 'configured default' });
  const delay = input('delaySeconds', v.delaySeconds ?? 5, { type: 'number', min: '0' });
  const budget = input('budgetTokens', v.budgetTokens, { type: 'number', min: '0', placeholder: 'configured default' });
  const paused = h('input', { type: 'checkbox', name: 'paused', 'aria-label': 'paused' });
  paused.checked = !!v.paused;
  const msg = h('div', { class: 'err', 'data-testid': 'evaluator-error' });

  const form = h('form', { class: 'detail editor', id: 'evaluator-form' },
    h('h2', null, ev ? 'Edit evaluator' : 'New evaluator'),
    h('div', { class: 'grid' }, field('Name', name), field('Evaluates', target), field('Paused', paused)),
    field('Judge prompt ({{input}}, {{output}}, {{metadata.key}}, {{trace.input}} for observations)', prompt),
    field('Variable mapping (one "variable = path" per line, optional)', mapping),
    h('h2', null, 'Which records'),
    h('div', { class: 'grid' }, field('Names (any of)', names), field('Tags (all of)', tags), field('Environments', envs),
      field('Observation types', types), field('Models', models), field('Sample rate (0–1)', rate)),
    h('h2', null, 'Score written'),
    h('div', { class: 'grid' }, field('Score config', config), field('Score name', scoreName), field('Data type', dataType),
      field('Categories', categories), field('Min', min), field('Max', max)),
    h('h2', null, 'Judge'),
    h('div', { class: 'grid' }, field('Model', model), field('Delay (seconds)', delay), field('Token budget', budget)),
    h('div', { class: 'toolbar' }, h('button', { class: 'primary', type: 'submit' }, ev ? 'Save' : 'Create'),
      h('button', { type: 'button', onclick: onCancel }, 'Cancel')), msg);

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    msg.textContent = '';
    const variableMapping = {};
    for (const line of mapping.value.split('\n')) {
      const at = line.indexOf('=');
      if (at > 0) variableMapping[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
    const filter = { names: list(names.value), tags: list(tags.value), environments: list(envs.value),
      models: list(models.value), sampleRate: Number(rate.value || 1) };
    if (target.value === 'observation') filter.types = list(types.value); else filter.types = [];
    const output = config.value ? { configId: config.value } : {
      configId: null, scoreName: scoreName.value.trim(), dataType: dataType.value,
      categories: dataType.value === 'CATEGORICAL' ? list(categories.value) : [],
      minValue: dataType.value === 'NUMERIC' && min.value !== '' ? Number(min.value) : null,
      maxValue: dataType.value === 'NUMERIC' && max.value !== '' ? Number(max.value) : null,
    };
    const body = { name: name.value.trim(), target: target.value, prompt: prompt.value, variableMapping, filter, output,
      model: model.value.trim() || null, delaySeconds: Number(delay.value || 0),
      budgetTokens: budget.value === '' ? null : Number(budget.value), paused: paused.checked };
    try {
      if (ev) await api('evaluators/' + encodeURIComponent(ev.id), { method: 'PATCH', body });
      else await api('evaluators', { method: 'POST', body });
      onSaved();
    } catch (err) {
      msg.textContent = err.message;
    }
  });
  return form;
}

function statusCell(s) {
  return h('div', null,
    h('div', null, `${fmtNum(s.succeeded)} ok · ${fmtNum(s.failed)} failed · ${fmtNum(s.pending)} pending`),
    s.budgetExhausted ? h('div', { class: 'err' }, 'budget exhausted') : null,
    s.lastError ? h('div', { class: 'err' }, 'last error: ' + s.lastError.slice(0, 140)) : null);
}

export async function render(main) {
  const slot = h('div');
  const body = h('div');
  const note = h('div');
  let configs = [];
  const close = () => clear(slot);
  const open = (ev) => { clear(slot).append(editor(ev, configs, async () => { close(); await load(); }, close)); };
  const act = async (fn) => { try { await fn(); } catch (err) { note.textContent = err.message; note.className = 'err'; } await load(); };
  const load = async () => {
    const [d, c] = await Promise.all([api('evaluators', { query: { limit: 100 } }), api('score-configs', { query: { limit: 100 } })]);
    configs = c.data;
    clear(body);
    if (d.data.length && !d.data[0].status.judgeConfigured) {
      body.append(h('div', { class: 'warn' }, 'No judge is configured ([judge] base_url in config.toml or SIGHTLINE_JUDGE_BASE_URL): evaluations wait.'));
    }
    if (!d.data.length) { body.append(h('p', { class: 'muted' }, 'No evaluators yet.')); return; }
    body.append(table([
      { title: 'Name', cell: (e) => e.name },
      { title: 'Evaluates', cell: (e) => e.target + (e.filter.sampleRate < 1 ? ` (${Math.round(e.filter.sampleRate * 100)}%)` : '') },
      { title: 'Score', cell: (e) => `${e.output.scoreName} (${e.output.dataType.toLowerCase()})` },
      { title: 'State', cell: (e) => e.paused ? 'paused' : 'active' },
      { title: 'Status', cell: (e) => statusCell(e.status) },
      { title: 'Tokens', num: true, cell: (e) => fmtNum(e.status.usedTokens) + (e.status.budgetTokens ? ' / ' + fmtNum(e.status.budgetTokens) : '') },
      { title: '', cell: (e) => h('div', { class: 'toolbar' },
        h('button', { onclick: () => open(e) }, 'Edit'),
        h('button', { 'data-toggle': e.id, onclick: () => act(() => api('evaluators/' + encodeURIComponent(e.id), { method: 'PATCH', body: { paused: !e.paused } })) }, e.paused ? 'Resume' : 'Pause'),
        h('button', { onclick: () => act(async () => {
          const r = await api('evaluators/' + encodeURIComponent(e.id) + '/backfill', { method: 'POST', body: {} });
          note.className = 'muted';
          note.textContent = `Backfill of ${e.name}: ${r.matched} of ${r.scanned} records queued (already judged ones are skipped).`;
        }) }, 'Backfill'),
        h('button', { onclick: () => act(async () => {
          const j = await api('evaluators/' + encodeURIComponent(e.id) + '/jobs', { query: { state: 'FAILED', limit: 20 } });
          note.className = '';
          clear(note).append(h('h2', null, `Failed jobs of ${e.name}`), j.data.length ? table([
            { title: 'Trace', cell: (x) => x.traceId },
            { title: 'Observation', cell: (x) => x.observationId || '' },
            { title: 'Attempts', num: true, cell: (x) => String(x.attempts) },
            { title: 'Error', cell: (x) => x.error || '' },
            { title: 'Finished', cell: (x) => fmtTime(x.finishedAt) },
          ], j.data) : h('p', { class: 'muted' }, 'None.'));
        }) }, 'Failures'),
        h('button', { onclick: () => { if (confirm('Delete evaluator ' + e.name + '? Its scores stay.')) act(() => api('evaluators/' + encodeURIComponent(e.id), { method: 'DELETE' })); } }, 'Delete')) },
    ], d.data.map((e) => ({ ...e, __attrs: { 'data-evaluator-id': e.id } }))));
  };
  main.append(h('div', { class: 'toolbar' }, h('h1', null, 'Evaluators'),
    h('button', { class: 'primary', id: 'new-evaluator', onclick: () => open(null) }, 'New evaluator')), slot, body, note);
  await load();
  return { refresh: () => (slot.childElementCount ? null : load()) };
}
