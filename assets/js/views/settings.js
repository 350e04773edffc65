// Settings of the selected project: API keys (create with the secret shown once, revoke), model
// prices (the project's own models beat the built-in list), and the user's projects (create one).
import { h, clear, fmtTime, table } from '../dom.js';
import { api } from '../api.js';

const PER_MILLION = 1e6;

// Price per unit → "$ per 1M units", the way price lists are written.
function perMillion(p) {
  if (p === null || p === undefined) return '–';
  return '$' + Number((p * PER_MILLION).toPrecision(6)).toString();
}

// Every model the project prices with (project + config + built-in), all pages.
async function allModels() {
  const out = [];
  for (let page = 1; ; page++) {
    const d = await api('models', { query: { page, limit: 100 } });
    out.push(...d.data);
    if (page >= (d.meta.totalPages || 1)) return out;
  }
}

function keysSection() {
  const list = h('div');
  const shown = h('div', { 'data-testid': 'new-secret' });
  const note = h('input', { type: 'text', placeholder: 'note (optional)', 'aria-label': 'Key note', maxlength: '200' });
  const load = async () => {
    const d = await api('keys');
    clear(list).append(table([
      { title: 'Public key', cell: (k) => h('code', null, k.publicKey) },
      { title: 'Secret key', cell: (k) => h('code', null, k.displaySecretKey) },
      { title: 'Note', cell: (k) => k.note || '' },
      { title: 'Created', cell: (k) => fmtTime(k.createdAt) },
      { title: '', cell: (k) => h('button', { 'data-revoke': k.publicKey, onclick: async () => {
        if (!confirm('Revoke ' + k.publicKey + '? Clients using it will be rejected.')) return;
        await api('keys/' + encodeURIComponent(k.publicKey), { method: 'DELETE' });
        await load();
      } }, 'Revoke') },
    ], d.data));
  };
  const create = async () => {
    const k = await api('keys', { method: 'POST', body: { note: note.value } });
    note.value = '';
    clear(shown).append(h('div', { class: 'secret' },
      h('strong', null, 'Copy the secret key now; it is not shown again.'), h('br'),
      'LANGFUSE_PUBLIC_KEY=', h('code', null, k.publicKey), h('br'),
      'LANGFUSE_SECRET_KEY=', h('code', { 'data-testid': 'secret-value' }, k.secretKey)));
    await load();
  };
  const section = [h('h2', null, 'API keys'),
    h('div', { class: 'toolbar' }, note, h('button', { class: 'primary', id: 'create-key', onclick: create }, 'Create API key')),
    shown, list];
  return { section, load };
}

function modelsSection() {
  const own = h('div', { 'data-testid': 'project-models' });
  const builtin = h('div');
  const error = h('div', { class: 'err', 'data-testid': 'model-error' });
  const field = (name, placeholder, attrs = {}) => h('input', { name, placeholder, 'aria-label': placeholder, ...attrs });
  const f = {
    modelName: field('modelName', 'Model name', { required: true, maxlength: '200' }),
    matchPattern: field('matchPattern', 'Match pattern (regex), e.g. (?i)^my-llm$', { required: true }),
    input: field('inputPrice', 'Input $ per 1M tokens', { type: 'number', step: 'any', min: '0' }),
    output: field('outputPrice', 'Output $ per 1M tokens', { type: 'number', step: 'any', min: '0' }),
  };
  const filter = field('filter', 'Filter built-in models', { type: 'search' });
  let models = [];
  const columns = (withDelete) => [
    { title: 'Model', cell: (m) => m.modelName },
    { title: 'Match pattern', cell: (m) => h('code', null, m.matchPattern) },
    { title: 'Input / 1M', num: true, cell: (m) => perMillion(m.inputPrice) },
    { title: 'Output / 1M', num: true, cell: (m) => perMillion(m.outputPrice) },
    { title: 'Tiers', num: true, cell: (m) => String((m.pricingTiers || []).length) },
    withDelete ? { title: '', cell: (m) => h('button', { 'data-delete-model': m.modelName, onclick: async () => {
      if (!confirm('Delete the price of ' + m.modelName + '? Later generations fall back to the built-in list.')) return;
      await api('models/' + encodeURIComponent(m.id), { method: 'DELETE' });
      await load();
    } }, 'Delete') } : null,
  ].filter(Boolean);
  const drawBuiltin = () => {
    const needle = filter.value.trim().toLowerCase();
    const rows = models.filter((m) => m.isLangfuseManaged && (!needle || m.modelName.toLowerCase().includes(needle)));
    clear(builtin).append(table(columns(false), rows.slice(0, 200)));
  };
  const load = async () => {
    models = await allModels();
    const mine = models.filter((m) => !m.isLangfuseManaged);
    clear(own).append(mine.length
      ? table(columns(true), mine.map((m) => ({ ...m, __attrs: { 'data-model-name': m.modelName } })))
      : h('p', { class: 'muted' }, 'No custom prices yet: generations are priced from the built-in list.'));
    drawBuiltin();
  };
  filter.addEventListener('input', drawBuiltin);
  const form = h('form', { class: 'toolbar', id: 'model-form' }, f.modelName, f.matchPattern, f.input, f.output,
    h('button', { class: 'primary', type: 'submit' }, 'Add model price'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    const price = (el) => (el.value === '' ? null : Number(el.value) / PER_MILLION);
    try {
      await api('models', { method: 'POST', body: {
        modelName: f.modelName.value.trim(), matchPattern: f.matchPattern.value.trim(), unit: 'TOKENS',
        inputPrice: price(f.input), outputPrice: price(f.output),
      } });
      for (const el of Object.values(f)) el.value = '';
      await load();
    } catch (err) {
      error.textContent = err.message;
    }
  });
  const section = [h('h2', null, 'Model prices'),
    h('p', { class: 'muted' }, 'A project model beats the built-in list for the generations it matches from now on; '
      + 'run `sightline recost` to re-price stored ones.'),
    form, error, own,
    h('h3', null, 'Built-in prices'), filter, builtin];
  return { section, load };
}

function projectsSection() {
  const list = h('div');
  const name = h('input', { name: 'projectName', placeholder: 'New project name', 'aria-label': 'New project name', maxlength: '100', required: true });
  const error = h('div', { class: 'err' });
  const form = h('form', { class: 'toolbar', id: 'project-form' }, name, h('button', { class: 'primary', type: 'submit' }, 'Create project'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    try {
      const p = await api('projects', { method: 'POST', body: { name: name.value } });
      window.dispatchEvent(new CustomEvent('sightline:project-created', { detail: p }));
    } catch (err) {
      error.textContent = err.message;
    }
  });
  const load = async () => {
    const me = await api('me');
    clear(list).append(table([
      { title: 'Project', cell: (p) => p.name },
      { title: 'ID', cell: (p) => h('code', null, p.id) },
      { title: '', cell: (p) => (p.id === me.project ? h('span', { class: 'muted' }, 'selected') : '') },
    ], me.projects));
  };
  return { section: [h('h2', null, 'Projects'), list, form, error], load };
}

export async function render(main) {
  const sections = [keysSection(), modelsSection(), projectsSection()];
  main.append(h('h1', null, 'Settings'), ...sections.flatMap((s) => s.section));
  await Promise.all(sections.map((s) => s.load()));
  return {};
}
