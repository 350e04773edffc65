// API keys of the selected project: create (secret shown once) and revoke.
import { h, clear, fmtTime, table } from '../dom.js';
import { api } from '../api.js';

export async function render(main) {
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
  main.append(h('h1', null, 'Settings'), h('h2', null, 'API keys'),
    h('div', { class: 'toolbar' }, note, h('button', { class: 'primary', id: 'create-key', onclick: create }, 'Create API key')),
    shown, list,
    h('h2', null, 'Model prices'),
    h('p', { class: 'muted' }, 'Built-in Langfuse price list; custom model prices are not editable here yet.'));
  await load();
  return {};
}
