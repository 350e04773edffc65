// Element building for untrusted data. Everything here creates nodes and sets textContent;
// nothing parses HTML. Attribute values come from our code, never from server data, except
// through `link()`, which only builds same-page hash routes from encoded ids.

const SVG_NS = 'http://www.w3.org/2000/svg';

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'style') Object.assign(el.style, v);
    else if (k === 'value') el.value = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

// h('div', {class: 'x'}, 'text', child, [more]) — text is always a text node.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  return append(el, children);
}

export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  return append(el, children);
}

// A link to a dashboard route. Segments are URI-encoded, so data cannot change the scheme.
export function link(segments, text, query) {
  const href = route(segments, query);
  return h('a', { href }, text);
}

export function route(segments, query) {
  let href = '#/' + segments.map((s) => encodeURIComponent(String(s))).join('/');
  const q = query ? new URLSearchParams(query).toString() : '';
  return q ? href + '?' + q : href;
}

export function clear(el) { el.replaceChildren(); return el; }

export function fmtCost(v) {
  if (v === null || v === undefined || v < 0) return '–';
  if (v === 0) return '$0';
  return '$' + (v < 0.01 ? v.toFixed(6) : v.toFixed(4));
}
export function fmtNum(v) { return v === null || v === undefined ? '–' : Number(v).toLocaleString('en-US'); }
export function fmtSecs(v) {
  if (v === null || v === undefined || v < 0) return '–';
  return v < 1 ? (v * 1000).toFixed(0) + ' ms' : v.toFixed(2) + ' s';
}
export function fmtTime(iso) {
  if (!iso) return '–';
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toLocaleString();
}

const PREVIEW_CHARS = 2000;
const PREVIEW_ITEMS = 100;

// Long text shows a prefix and a "show all" button.
export function longText(s, cls) {
  const full = String(s);
  const pre = h('pre', { class: cls || '' });
  if (full.length <= PREVIEW_CHARS) { pre.textContent = full; return pre; }
  pre.textContent = full.slice(0, PREVIEW_CHARS) + '…';
  const more = h('button', { class: 'link', onclick: () => { pre.textContent = full; more.remove(); } },
    `show all (${full.length.toLocaleString('en-US')} characters)`);
  return h('div', null, pre, more);
}

// Collapsible JSON tree; nested levels start closed beyond `open` depth.
export function jsonView(value, open = 1) {
  if (value === null || value === undefined) return h('span', { class: 'json-null' }, 'null');
  if (typeof value === 'string') return longText(value, 'json-str');
  if (typeof value === 'number' || typeof value === 'boolean') return h('span', { class: 'json-num' }, String(value));
  const isArr = Array.isArray(value);
  const entries = isArr ? value.map((v, i) => [i, v]) : Object.entries(value);
  const d = h('details', { class: 'json' });
  if (open > 0) d.open = true;
  d.append(h('summary', null, isArr ? `[${entries.length}]` : `{${entries.length}}`));
  const body = h('div');
  const renderItems = (n) => {
    clear(body);
    for (const [k, v] of entries.slice(0, n)) {
      body.append(h('div', null, h('span', { class: 'json-key' }, String(k)), ': ', jsonView(v, open - 1)));
    }
    if (entries.length > n) {
      body.append(h('button', { class: 'link', onclick: () => renderItems(entries.length) },
        `show all ${entries.length} items`));
    }
  };
  renderItems(PREVIEW_ITEMS);
  d.append(body);
  return d;
}

function messageList(v) {
  const isMsg = (m) => m && typeof m === 'object' && !Array.isArray(m) && typeof m.role === 'string' && ('content' in m || 'tool_calls' in m);
  if (Array.isArray(v) && v.length > 0 && v.every(isMsg)) return v;
  if (v && typeof v === 'object' && Array.isArray(v.messages) && v.messages.length > 0 && v.messages.every(isMsg)) return v.messages;
  if (isMsg(v)) return [v];
  return null;
}

function messageContent(c) {
  if (typeof c === 'string') return longText(c);
  if (Array.isArray(c)) {
    return h('div', null, c.map((part) =>
      part && part.type === 'text' && typeof part.text === 'string' ? longText(part.text) : jsonView(part, 1)));
  }
  return jsonView(c, 1);
}

// Input/output: chat messages when they look like messages, else strings as text, else JSON.
// Input or output as chat messages when it is messages, else as text or collapsible JSON.
// `newTurn`: of a chat, only what follows the last assistant message (a session replay shows
// each turn once, not the whole history every input repeats).
export function ioView(value, { newTurn = false } = {}) {
  if (value === null || value === undefined) return h('span', { class: 'muted' }, 'none');
  let v = value;
  if (typeof v === 'string') {
    const t = v.trim();
    if ((t.startsWith('{') || t.startsWith('[')) && t.length < 5_000_000) {
      try { v = JSON.parse(t); } catch { return longText(value); }
    } else {
      return longText(value);
    }
  }
  let msgs = messageList(v);
  if (!msgs) return jsonView(v, 2);
  if (newTurn) {
    const last = msgs.map((m) => m.role).lastIndexOf('assistant');
    if (last >= 0 && last < msgs.length - 1) msgs = msgs.slice(last + 1);
  }
  return h('div', null, msgs.map((m) => h('div', { class: 'msg role-' + String(m.role).replace(/[^a-z]/g, '') },
    h('div', { class: 'role' }, String(m.role)),
    'content' in m ? messageContent(m.content) : null,
    m.tool_calls ? jsonView(m.tool_calls, 1) : null)));
}

// A search highlight: the server sends HTML-escaped text with <mark> around matches. It is
// rebuilt here as text nodes and <mark> elements; nothing in it is ever parsed as HTML.
const ENTITIES = { '&amp;': '&', '&lt;': '<', '&gt;': '>', '&quot;': '"', '&#39;': "'", '&#x27;': "'" };
export function highlight(snippet) {
  const unescape = (t) => t.replace(/&(amp|lt|gt|quot|#39|#x27);/g, (e) => ENTITIES[e]);
  const parts = String(snippet).split(/<mark>|<\/mark>/);
  return h('span', { class: 'snippet' }, parts.map((t, i) => (i % 2 ? h('mark', null, unescape(t)) : unescape(t))));
}

export function kv(pairs) {
  return h('dl', { class: 'kv' }, pairs.filter(Boolean).map(([k, v, attrs]) => [h('dt', null, k), h('dd', attrs || null, v)]));
}

export function table(columns, rows, onRow) {
  const head = h('tr', null, columns.map((c) => h('th', { class: c.num ? 'num' : '' }, c.title)));
  const body = rows.map((r) => {
    const tr = h('tr', { class: onRow ? 'clickable' : '', ...(r.__attrs || {}) },
      columns.map((c) => h('td', { class: c.num ? 'num' : '' }, c.cell(r))));
    if (onRow) tr.addEventListener('click', (e) => { if (!(e.target instanceof HTMLAnchorElement)) onRow(r); });
    return tr;
  });
  return h('table', null, h('thead', null, head), h('tbody', null, body));
}
