// Line diff of two texts, for comparing prompt versions in the browser: common leading and
// trailing lines are matched first, the middle is aligned with Myers' O((N+M)·D) algorithm, so a
// long prompt with a few edits costs little. When the texts are so different that the search
// would need more than MAX_CELLS of memory, the middle is shown as removed-then-added instead
// of freezing the tab.

const MAX_CELLS = 8_000_000;

function lines(text) {
  return String(text ?? '').split(/\r\n|\n|\r/);
}

// [{ op: 'same' | 'del' | 'add', text, a, b }] where a / b are 1-based line numbers in the old
// and new text (null where the line is absent from that side).
export function lineDiff(oldText, newText) {
  const a = lines(oldText);
  const b = lines(newText);
  const out = [];
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start++;
  let endA = a.length;
  let endB = b.length;
  while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) { endA--; endB--; }
  for (let i = 0; i < start; i++) out.push({ op: 'same', text: a[i], a: i + 1, b: i + 1 });
  const mid = a.slice(start, endA);
  const midB = b.slice(start, endB);
  for (const [op, i, j] of myers(mid, midB) || replaceAll(mid, midB)) {
    if (op === 'add') out.push({ op, text: midB[j], a: null, b: start + j + 1 });
    else out.push({ op, text: mid[i], a: start + i + 1, b: op === 'same' ? start + j + 1 : null });
  }
  for (let i = endA, j = endB; i < a.length; i++, j++) out.push({ op: 'same', text: a[i], a: i + 1, b: j + 1 });
  return out;
}

function replaceAll(a, b) {
  return [...a.map((_, i) => ['del', i, null]), ...b.map((_, j) => ['add', null, j])];
}

// Shortest edit script as [op, indexInA, indexInB]; null when it would cost too much memory.
function myers(a, b) {
  const n = a.length;
  const m = b.length;
  const max = n + m;
  const off = max + 1;
  const v = new Int32Array(2 * max + 3);
  const trace = [];
  let cells = 0;
  for (let d = 0; d <= max; d++) {
    cells += v.length;
    if (cells > MAX_CELLS) return null;
    trace.push(v.slice());
    for (let k = -d; k <= d; k += 2) {
      let x = k === -d || (k !== d && v[off + k - 1] < v[off + k + 1]) ? v[off + k + 1] : v[off + k - 1] + 1;
      let y = x - k;
      while (x < n && y < m && a[x] === b[y]) { x++; y++; }
      v[off + k] = x;
      if (x >= n && y >= m) return backtrack(trace, off, n, m);
    }
  }
  return null;
}

// Walks the saved frontier of each step back from (n, m) to (0, 0).
function backtrack(trace, off, n, m) {
  const ops = [];
  let x = n;
  let y = m;
  for (let d = trace.length - 1; d > 0; d--) {
    const v = trace[d];
    const k = x - y;
    const prevK = k === -d || (k !== d && v[off + k - 1] < v[off + k + 1]) ? k + 1 : k - 1;
    const prevX = v[off + prevK];
    const prevY = prevX - prevK;
    while (x > prevX && y > prevY) { x--; y--; ops.push(['same', x, y]); }
    if (x === prevX) { y--; ops.push(['add', null, y]); } else { x--; ops.push(['del', x, null]); }
  }
  while (x > 0 && y > 0) { x--; y--; ops.push(['same', x, y]); }
  return ops.reverse();
}
