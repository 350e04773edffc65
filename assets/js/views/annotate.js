// Manual annotation: a small form that scores a trace or an observation against one of the
// project's score configs (POST /api/ui/scores, source ANNOTATION; the server checks the value
// against the config, and its message is shown as it is).
import { h, clear } from '../dom.js';
import { api } from '../api.js';

function valueInput(config) {
  if (config.dataType === 'NUMERIC') {
    const attrs = { type: 'number', step: 'any', name: 'value', 'aria-label': 'Value', required: true };
    if (config.minValue !== null && config.minValue !== undefined) attrs.min = String(config.minValue);
    if (config.maxValue !== null && config.maxValue !== undefined) attrs.max = String(config.maxValue);
    const el = h('input', attrs);
    return { el, read: () => Number(el.value) };
  }
  if (config.dataType === 'BOOLEAN') {
    const el = h('select', { name: 'value', 'aria-label': 'Value' },
      h('option', { value: '1' }, 'True'), h('option', { value: '0' }, 'False'));
    return { el, read: () => Number(el.value) };
  }
  if (config.dataType === 'CATEGORICAL') {
    const el = h('select', { name: 'value', 'aria-label': 'Value' },
      (config.categories || []).map((c) => h('option', { value: c.label }, c.label)));
    return { el, read: () => el.value };
  }
  const el = h('input', { type: 'text', name: 'value', 'aria-label': 'Value', maxlength: '500', required: true });
  return { el, read: () => el.value };
}

// `target` is { traceId, observationId? }; `author` the logged-in email; `onDone` runs after a
// score was stored.
export function scoreForm(target, author, onDone) {
  const box = h('div', { class: 'annotate', 'data-testid': 'annotate' });
  const load = async () => {
    const d = await api('score-configs', { query: { limit: 100 } });
    const configs = d.data.filter((c) => !c.isArchived);
    clear(box);
    if (!configs.length) {
      box.append(h('p', { class: 'muted' }, 'Create a score config on the Scores page to annotate.'));
      return;
    }
    const select = h('select', { name: 'config', 'aria-label': 'Score config' },
      configs.map((c) => h('option', { value: c.id }, `${c.name} (${c.dataType.toLowerCase()})`)));
    const slot = h('span');
    let input = null;
    const pick = () => {
      input = valueInput(configs.find((c) => c.id === select.value));
      clear(slot).append(input.el);
    };
    select.addEventListener('change', pick);
    pick();
    const comment = h('input', { type: 'text', name: 'comment', placeholder: 'comment (optional)', 'aria-label': 'Comment' });
    const msg = h('span', { class: 'err', 'data-testid': 'annotate-error' });
    const form = h('form', { class: 'toolbar' }, select, slot, comment,
      h('button', { class: 'primary', type: 'submit' }, 'Add score'), msg);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      msg.textContent = '';
      const config = configs.find((c) => c.id === select.value);
      const body = { ...target, name: config.name, configId: config.id, value: input.read(),
        dataType: config.dataType, source: 'ANNOTATION', authorUserId: author };
      if (comment.value.trim()) body.comment = comment.value.trim();
      try {
        await api('scores', { method: 'POST', body });
        onDone();
      } catch (err) {
        msg.textContent = err.message;
      }
    });
    box.append(form);
  };
  load().catch((err) => { box.textContent = 'Could not load score configs: ' + err.message; });
  return box;
}
