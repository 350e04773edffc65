// Boot, login, the shell (navigation, project switcher) and the hash router.
// Routes: #/p/<project>/<view>[/<id>[/observations/<id>]][?query]
import { h, clear, route } from './dom.js';
import { api, setProject, currentProject } from './api.js';
import * as overview from './views/overview.js';
import * as traces from './views/traces.js';
import * as trace from './views/trace.js';
import * as sessions from './views/sessions.js';
import * as users from './views/users.js';
import * as scores from './views/scores.js';
import * as prompts from './views/prompts.js';
import * as settings from './views/settings.js';
import * as evaluators from './views/evaluators.js';

const NAV = [
  ['overview', 'Overview'], ['traces', 'Traces'], ['sessions', 'Sessions'],
  ['users', 'Users'], ['scores', 'Scores'], ['prompts', 'Prompts'], ['evaluators', 'Evaluators'], ['settings', 'Settings'],
];

const app = document.getElementById('app');
let me = null;
let current = null; // { refresh?: fn }
let events = null;

function parseRoute() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, qs] = raw.split('?');
  const parts = path.split('/').filter(Boolean).map((s) => { try { return decodeURIComponent(s); } catch { return s; } });
  const query = new URLSearchParams(qs || '');
  if (parts[0] === 'p' && parts.length >= 2) return { project: parts[1], view: parts[2] || 'overview', rest: parts.slice(3), query };
  return { project: null, view: parts[0] || 'overview', rest: parts.slice(1), query };
}

export function go(segments, query) { location.hash = route(['p', currentProject(), ...segments], query); }

function showLogin(message) {
  if (events) { events.close(); events = null; }
  me = null;
  const email = h('input', { type: 'email', name: 'email', placeholder: 'email', autocomplete: 'username', required: true });
  const password = h('input', { type: 'password', name: 'password', placeholder: 'password', autocomplete: 'current-password', required: true });
  const error = h('div', { class: 'err', 'data-testid': 'login-error' }, message || '');
  const form = h('form', { class: 'login', id: 'login-form' },
    h('h1', null, 'Sightline'), email, password,
    h('button', { class: 'primary', type: 'submit' }, 'Log in'), error);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    try {
      await api('login', { method: 'POST', body: { email: email.value, password: password.value } });
      await boot();
    } catch (err) {
      error.textContent = err.status === 429 ? 'Too many attempts; wait a minute.' : (err.message || 'Login failed');
    }
  });
  clear(app).append(form);
  email.focus();
}

async function logout() {
  try { await api('logout', { method: 'POST' }); } catch { /* already gone */ }
  showLogin('Logged out.');
}

// The shell is redrawn on every route, so look the indicator up each time.
function showLive() {
  const live = document.getElementById('live');
  if (live) live.textContent = events && events.readyState === EventSource.OPEN ? '● live' : '○ reconnecting';
}

function connectEvents() {
  if (events) events.close();
  events = new EventSource('/api/ui/events?project=' + encodeURIComponent(currentProject()));
  events.addEventListener('open', showLive);
  events.addEventListener('error', showLive);
  events.addEventListener('change', () => { if (current && current.refresh) current.refresh(); });
}

function shell(r) {
  const select = h('select', { id: 'project-switcher', 'aria-label': 'Project',
    onchange: (e) => { location.hash = route(['p', e.target.value, r.view]); } },
    me.projects.map((p) => { const o = h('option', { value: p.id }, p.name); if (p.id === currentProject()) o.selected = true; return o; }));
  const nav = h('nav', { class: 'side' },
    h('div', { class: 'brand' }, 'Sightline'),
    me.projects.length > 1 ? select : h('div', { class: 'muted' }, (me.projects[0] || {}).name || ''),
    NAV.map(([id, title]) => h('a', { href: route(['p', currentProject(), id]), class: r.view === id ? 'active' : '', 'data-nav': id }, title)),
    h('div', { class: 'spacer' }),
    h('div', { class: 'live', id: 'live' }, ''),
    h('div', { class: 'who' }, me.email),
    h('button', { id: 'logout', onclick: logout }, 'Log out'));
  const main = h('main', { id: 'main' });
  clear(app).append(h('div', { class: 'shell' }, nav, main));
  return main;
}

async function render() {
  if (!me) return;
  const r = parseRoute();
  const ids = me.projects.map((p) => p.id);
  if (!r.project || !ids.includes(r.project)) {
    location.replace(route(['p', ids.includes(r.project) ? r.project : me.project, r.view, ...r.rest]));
    return;
  }
  const switched = r.project !== currentProject();
  setProject(r.project);
  const main = shell(r);
  if (switched || !events) connectEvents(); else showLive();
  const views = { overview, traces, sessions, users, scores, prompts, evaluators, settings };
  let view = views[r.view];
  if (r.view === 'traces' && r.rest.length) view = trace;
  current = null;
  if (!view) { main.append(h('p', null, 'No such page.')); return; }
  try {
    current = await view.render(main, r, { go, me });
  } catch (err) {
    if (err.status !== 401) main.append(h('p', { class: 'err' }, 'Could not load: ' + err.message));
  }
}

async function boot() {
  // Langfuse's htmlPath deep links (/project/<p>/traces/<id>) map onto the hash routes.
  const m = location.pathname.match(/^\/project\/([^/]+)\/(traces|sessions)\/([^/]+)\/?$/);
  if (m) history.replaceState(null, '', '/' + route(['p', decodeURIComponent(m[1]), m[2], decodeURIComponent(m[3])]));
  try {
    me = await api('me');
  } catch (err) {
    showLogin(err.status === 401 ? '' : 'Server unavailable: ' + err.message);
    return;
  }
  setProject(null);
  await render();
}

window.addEventListener('hashchange', render);
// Settings created a project: learn the new membership, then open the project.
window.addEventListener('sightline:project-created', async (e) => {
  me = await api('me');
  location.hash = route(['p', e.detail.id, 'settings']);
});
window.addEventListener('sightline:logged-out', () => { if (me) showLogin('Your session ended; log in again.'); });
boot();
