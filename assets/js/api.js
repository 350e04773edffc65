// JSON calls to /api/ui. Every call names the selected project and carries the CSRF header
// (required by the server on state changes; harmless on reads).

let project = null;
export function setProject(p) { project = p; }
export function currentProject() { return project; }

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

export async function api(path, { method = 'GET', body, query } = {}) {
  const headers = { 'Accept': 'application/json', 'X-Sightline-Csrf': '1' };
  if (project) headers['X-Sightline-Project'] = project;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let url = '/api/ui/' + path;
  if (query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v === undefined || v === null || v === '') continue;
      for (const x of Array.isArray(v) ? v : [v]) q.append(k, x);
    }
    const s = q.toString();
    if (s) url += '?' + s;
  }
  const res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: 'same-origin' });
  let data = null;
  try { data = await res.json(); } catch { data = null; }
  if (!res.ok) {
    const err = new ApiError(res.status, (data && data.message) || res.statusText);
    if (res.status === 401 && path !== 'login') window.dispatchEvent(new CustomEvent('sightline:logged-out'));
    throw err;
  }
  return data;
}
