// The publisher's status page: one EventSource on /events gives the whole
// state, then every change as the publisher applies it (the stream that
// `zurg resolve --watch` follows). Plain JS, no framework, no build step.
'use strict';

const COLUMNS = ['Service', 'Endpoint', 'Version', 'GPID', 'Uptime', 'Restarts', 'Last exit', 'Restarts, last hour'];
const RECENT_US = 5 * 60 * 1e6;   // a death this recent stands out
const HOUR_US = 3600 * 1e6;
// eps: service\ngpid -> endpoint; bySlot: host\nservice -> gpid -> endpoint.
const state = { hosts: new Map(), eps: new Map(), bySlot: new Map(), stats: new Map(), skewUs: 0, last: 0 };
// host\nservice -> its row, so a change finds it without a search.
const rowEls = new Map();
let source = null;
let backoff = 500;
// The publisher said it is stopping (`stopping`): the page looks for it
// to be back every RETURN_MS at first, then less often up to
// RETURN_MAX_MS, instead of waiting for the stream's own retry.
const RETURN_MS = 100;
const RETURN_MAX_MS = 1000;
let stopped = false;
let returnMs = RETURN_MS;
let renderPending = false;
let hostsPending = false;

const nowUs = () => Date.now() * 1000 + state.skewUs;
const epKey = (e) => e.service + '\n' + e.gpid;
const statKey = (s) => s.host + '\n' + s.service;

function esc(v) {
  return String(v ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

// An age as `docker ps` writes one: seconds only in the first minute, so
// a row's clock moves once a second while its process is young and once
// a minute after (each move is a frame of the renderer's).
function ago(us) {
  const s = Math.max(0, Math.floor(us / 1e6));
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm';
  if (s < 86400) return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
  return Math.floor(s / 86400) + 'd ' + Math.floor((s % 86400) / 3600) + 'h';
}

function exitText(x) {
  if (!x) return '';
  if (x.reason !== 'exit') return x.reason;           // lease, bye, snapshot
  if (x.exit && x.exit.signal) return x.exit.signal;
  if (x.exit && x.exit.code !== undefined) return 'exit ' + x.exit.code;
  return 'exit';
}

function spark(stat) {
  const nowMin = Math.floor(nowUs() / 60e6);
  const w = 120, h = 18, bw = w / 60;
  const counts = new Map((stat ? stat.restarts_by_minute : []).map(([m, n]) => [m, n]));
  const max = Math.max(1, ...counts.values());
  let bars = '';
  for (let i = 0; i < 60; i++) {
    const n = counts.get(nowMin - 59 + i) || 0;
    if (!n) continue;
    const bh = Math.max(2, Math.round((n / max) * h));
    bars += `<rect x="${(i * bw).toFixed(1)}" y="${h - bh}" width="${Math.max(1, bw - 0.5).toFixed(1)}" height="${bh}"><title>${n} restart(s)</title></rect>`;
  }
  return `<svg class="spark" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}"><line x1="0" y1="${h - 0.5}" x2="${w}" y2="${h - 0.5}"/>${bars}</svg>`;
}

function load(doc) {
  state.skewUs = doc.now_us - Date.now() * 1000;
  state.last = doc.id;
  state.hosts = new Map(doc.hosts.map((h) => [h.zurg, h]));
  state.eps = new Map();
  state.bySlot = new Map();
  for (const eps of Object.values(doc.services)) for (const e of eps) addEp(e);
  state.stats = new Map(doc.stats.map((s) => [statKey(s), s]));
}

function slotOf(e) {
  const k = e.host + '\n' + e.service;
  if (!state.bySlot.has(k)) state.bySlot.set(k, new Map());
  return state.bySlot.get(k);
}

function addEp(e) {
  state.eps.set(epKey(e), e);
  slotOf(e).set(e.gpid, e);
}

function apply(c) {
  state.last = c.id;
  if (c.change === 'up') addEp(c.endpoint);
  else {
    state.eps.delete(epKey(c.endpoint));
    slotOf(c.endpoint).delete(c.endpoint.gpid);
  }
  if (c.stat) state.stats.set(statKey(c.stat), c.stat);
  if (!state.hosts.has(c.endpoint.host) || c.reason === 'lease' || c.reason === 'bye' || c.reason === 'snapshot') refreshHosts();
}

// Host records (connected, seq) are not in the change stream: fetched again
// when a change says they moved.
function refreshHosts() {
  if (hostsPending) return;
  hostsPending = true;
  setTimeout(async () => {
    try {
      const r = await fetch('/api/hosts', { credentials: 'same-origin' });
      if (r.ok) {
        const doc = await r.json();
        state.hosts = new Map(doc.hosts.map((h) => [h.zurg, h]));
        schedule();
      }
    } catch (e) { /* the stream's reconnect covers it */ }
    hostsPending = false;
  }, 200);
}

function schedule() {
  if (renderPending) return;
  renderPending = true;
  setTimeout(() => { renderPending = false; render(); }, 0);
}

// One service's row: its attributes, and its cells as HTML without the
// clocks' text (clocks() fills that in), so that a redraw can tell which
// cells changed and touch only those.
function rowParts(z, ip, name, eps, stat, now) {
  eps.sort((a, b) => b.since_us - a.since_us);
  const last = stat && stat.last_exit;
  const recent = last && now - last.time_us < RECENT_US;
  const cls = ['svc'];
  if (recent) cls.push('recent');
  if (!eps.length) cls.push('down');
  const exit = exitText(last);
  const attrs = {
    role: 'row', class: cls.join(' '), style: '--lines: ' + Math.max(1, eps.length), 'data-host': z, 'data-ip': ip, 'data-service': name,
    'data-gpids': eps.map((e) => e.gpid).join(' '), 'data-exit': exit, 'data-restarts': String(stat ? stat.restarts : 0),
  };
  // Columns have fixed widths (style.css): a cell cut short shows itself
  // whole on hover. A cell of one line of text says so (`text`): a redraw
  // then sets its text instead of parsing HTML.
  const cell = (cls, lines, none) => ({
    cls, title: lines.join('\n'), body: lines.length ? lines.map(esc).join('<br>') : none,
    text: lines.length > 1 ? null : lines.length ? lines[0] : none,
  });
  const cells = [
    cell('svc', [name], ''),
    // An IPv6 address in brackets, as a socket address (and a GPID) writes it.
    cell('ep', eps.map((e) => (e.ip.includes(':') ? '[' + e.ip + ']' : e.ip) + ':' + e.port), '—'),
    cell('', eps.map((e) => e.version || '—'), '—'),
    cell('gpid', eps.map((e) => e.gpid), 'not running'),
    { body: eps.length ? eps.map((e) => `<span data-since="${e.since_us}"></span>`).join('<br>') : '—' },
    { cls: 'num', body: String(stat ? stat.restarts : 0), text: String(stat ? stat.restarts : 0) },
    { cls: 'exit', body: last ? `${esc(exit)} <span class="when" data-at="${last.time_us}"></span>` : '—' },
    { body: spark(stat) },
  ];
  for (const c of cells) c.key = (c.title ?? '') + '\0' + c.body;
  return { attrs, cells };
}

// The drawn cells of each row, to compare a redraw with.
const drawn = new WeakMap();

function rowHtml(parts) {
  const attrs = Object.entries(parts.attrs).map(([k, v]) => ` ${k}="${esc(v)}"`).join('');
  const td = (c) => `<td role="cell"${c.cls ? ` class="${c.cls}"` : ''}${c.title !== undefined ? ` title="${esc(c.title)}"` : ''}>${c.body}</td>`;
  return `<tr${attrs}>${parts.cells.map(td).join('')}</tr>`;
}

// Redraws the row of (host, service) after a change: only the attributes
// and cells that differ, so a death costs the renderer a few cells' text,
// layout and paint, not a row of new elements. A row the page does not
// have yet (a new service or host) means a full render.
function renderRow(host, service) {
  const key = host + '\n' + service;
  const row = rowEls.get(key);
  if (!row || !row.isConnected) { schedule(); return; }
  const eps = [...(state.bySlot.get(key) || new Map()).values()];
  const stat = state.stats.get(key) || null;
  const now = nowUs();
  const parts = rowParts(host, row.dataset.ip, service, eps, stat, now);
  for (const [k, v] of Object.entries(parts.attrs)) if (row.getAttribute(k) !== v) row.setAttribute(k, v);
  const old = drawn.get(row);
  const tds = row.children;
  parts.cells.forEach((c, i) => {
    if (old && old[i] === c.key) return;
    const td = tds[i];
    if (c.title !== undefined && td.title !== c.title) td.title = c.title;
    if (c.text !== undefined && c.text !== null) td.textContent = c.text;
    else { td.innerHTML = c.body; clocks(td, now); }
  });
  drawn.set(row, parts.cells.map((c) => c.key));
}

// The clock moves uptimes and "ago"s, in place and only in the rows on
// screen: writing the clocks of all 200 rows of a page each second made a
// frame long enough to hold back the changes arriving during it. Rows are
// `content-visibility: auto`, so the renderer already knows which are
// drawn and says so when it changes (an IntersectionObserver of our own
// cost every frame as much again); a row coming into view gets its clocks
// set as it does.
const onScreen = new Set();
function watchVisibility(row) {
  row.addEventListener('contentvisibilityautostatechange', (e) => {
    if (e.skipped) onScreen.delete(row);
    else { onScreen.add(row); clocks(row, nowUs()); }
  });
}

function clocks(el, now) {
  const put = (el, text) => { if (el.textContent !== text) el.textContent = text; };
  for (const s of el.querySelectorAll('[data-since]')) put(s, ago(now - Number(s.dataset.since)));
  for (const s of el.querySelectorAll('[data-at]')) put(s, ago(now - Number(s.dataset.at)) + ' ago');
}

// The clocks move once a second, in a frame of their own only while no
// change is arriving: a change's frame moves them too when the last move
// is CLOCK_SHARE_MS old, and the clock's own timer waits CLOCK_MS from
// then. A frame of the clock's own (~1 ms of script and a 2-7 ms frame
// for the ~34 rows drawn) was what a death arriving meanwhile waited
// for; sharing the frame the change draws anyway leaves the renderer
// nothing of the clock's to be in the middle of while changes flow.
const CLOCK_MS = 1000;
const CLOCK_SHARE_MS = 500;
let clocksAt = -Infinity;
let clockTimer = 0;
let clockFrame = 0;

function tick() {
  const now = nowUs();
  for (const row of onScreen) clocks(row, now);
  clocksAt = performance.now();
  armClock();
}

// One clock timer, whoever moved the clocks last: a tick in a change's
// frame replaces the timer that was waiting (it once stayed armed beside
// the new one, and each such change added a clock for good).
function armClock() {
  clearTimeout(clockTimer);
  clockTimer = setTimeout(tick, Math.max(0, clocksAt + CLOCK_MS - performance.now()));
}

// After a change is drawn: its frame moves the clocks if they are due.
function clocksWithChange() {
  if (clockFrame || performance.now() - clocksAt < CLOCK_SHARE_MS) return;
  clockFrame = requestAnimationFrame(() => { clockFrame = 0; tick(); });
}

// Rows drawn again per REFRESH_SLICE between two tasks: a change that
// arrives meanwhile waits for one slice, not for the whole page (drawing
// 200 rows at once took a frame of ~10 ms, the page's worst latency).
const REFRESH_SLICE = 20;
let refreshing = false;

// Now and then red rows fade and bars shift. When the rows would stay the
// same rows, they are redrawn a slice at a time; otherwise (a stale host's
// services age out) the page is drawn whole.
function refresh() {
  if (refreshing || renderPending) return;
  const { byHost } = model(nowUs());
  const keys = [];
  for (const [z, services] of byHost) for (const name of services.keys()) keys.push(z + '\n' + name);
  if (keys.length !== rowEls.size || !keys.every((k) => rowEls.has(k))) { schedule(); return; }
  refreshing = true;
  let at = 0;
  const slice = () => {
    if (renderPending) { refreshing = false; return; }
    for (const key of keys.slice(at, at + REFRESH_SLICE)) {
      const [host, service] = key.split('\n');
      renderRow(host, service);
    }
    at += REFRESH_SLICE;
    if (at < keys.length) setTimeout(slice, 0);
    else { refreshing = false; summarize(byHost, nowUs()); }
  };
  slice();
}

// host zurg -> service -> { eps: [], stat }: what the page shows.
function model(now) {
  const byHost = new Map();
  const slot = (host, service) => {
    if (!byHost.has(host)) byHost.set(host, new Map());
    const m = byHost.get(host);
    if (!m.has(service)) m.set(service, { eps: [], stat: null });
    return m.get(service);
  };
  for (const h of state.hosts.keys()) if (!byHost.has(h)) byHost.set(h, new Map());
  for (const e of state.eps.values()) slot(e.host, e.service).eps.push(e);
  for (const s of state.stats.values()) {
    const live = state.hosts.has(s.host);
    const recent = s.last_exit && now - s.last_exit.time_us < HOUR_US;
    if (live || recent || byHost.has(s.host)) slot(s.host, s.service).stat = s;
  }
  return { byHost };
}

function summarize(byHost, now) {
  let nEps = 0, nDied = 0;
  for (const services of byHost.values()) {
    for (const { eps, stat } of services.values()) {
      nEps += eps.length;
      const last = stat && stat.last_exit;
      if (last && now - last.time_us < RECENT_US) nDied++;
    }
  }
  document.getElementById('summary').textContent =
    `${state.hosts.size} host(s), ${nEps} endpoint(s)` + (nDied ? `, ${nDied} service(s) lost a process in the last 5 minutes` : '');
}

function render() {
  const now = nowUs();
  const { byHost } = model(now);
  const hostName = (z) => {
    const h = state.hosts.get(z);
    return h ? (h.hostname || h.ip) : z;
  };
  const order = [...byHost.keys()].sort((a, b) => hostName(a).localeCompare(hostName(b)) || a.localeCompare(b));
  let html = '';
  const built = new Map();
  for (const z of order) {
    const h = state.hosts.get(z);
    const services = [...byHost.get(z).entries()].sort((a, b) => a[0].localeCompare(b[0]));
    const ip = h ? h.ip : (services.flatMap(([, v]) => v.eps)[0] || {}).ip || '';
    const badge = !h ? '<span class="badge off">gone</span>'
      : h.connected ? '<span class="badge">connected</span>' : '<span class="badge off">disconnected</span>';
    html += `<section class="host${h ? '' : ' gone'}" data-host="${esc(z)}" data-ip="${esc(ip)}">`;
    html += `<h2>${esc(h ? (h.hostname || h.ip) : ip || z)} ${badge}<span class="meta">${esc(ip)} · zurg ${esc(z)}${h ? ' · seq ' + h.seq : ''}</span></h2>`;
    if (!services.length) { html += '<p class="empty pad">No services published.</p></section>'; continue; }
    // Rows are grids (style.css), so the roles keep the table's meaning
    // for screen readers.
    html += '<table role="table"><thead role="rowgroup"><tr role="row">'
      + COLUMNS.map((c) => `<th role="columnheader">${c}</th>`).join('')
      + '</tr></thead><tbody role="rowgroup">';
    for (const [name, { eps, stat }] of services) {
      const parts = rowParts(z, ip, name, eps, stat, now);
      built.set(z + '\n' + name, parts.cells.map((c) => c.key));
      html += rowHtml(parts);
    }
    html += '</tbody></table></section>';
  }
  document.getElementById('hosts').innerHTML = html || '<p class="empty">No hosts publish to this publisher yet.</p>';
  rowEls.clear();
  onScreen.clear();
  for (const r of document.querySelectorAll('tr.svc')) {
    const key = r.dataset.host + '\n' + r.dataset.service;
    rowEls.set(key, r);
    drawn.set(r, built.get(key));
    watchVisibility(r);
  }
  // Every row's clocks once (a find in the page sees them); after that
  // only the rows on screen move.
  clocks(document.getElementById('hosts'), now);
  summarize(byHost, now);
}

function setLive(on, text) {
  const el = document.getElementById('live');
  el.className = on ? '' : 'off';
  el.textContent = text || (on ? 'live' : 'reconnecting…');
}

// The banner above the rows; no text hides it. While it shows, the rows
// are what the publisher last said, faded.
function setBanner(text) {
  const el = document.getElementById('banner');
  el.textContent = text || '';
  el.hidden = !text;
  document.getElementById('hosts').classList.toggle('stale', Boolean(text));
}

// After a `stopping`: asks whether a publisher answers again, and opens
// the stream the moment one does. A refused connection fails at once, so
// each look costs next to nothing while the publisher is down.
function awaitReturn() {
  setTimeout(async () => {
    try {
      const r = await fetch('/api/hosts', { credentials: 'same-origin' });
      // A new publisher holds no session of ours: log in again.
      if (r.status === 401) { location.reload(); return; }
      if (r.ok) { connect(); return; }
    } catch (e) { /* still down */ }
    returnMs = Math.min(returnMs * 2, RETURN_MAX_MS);
    awaitReturn();
  }, returnMs);
}

function connect() {
  source = new EventSource('/events');
  source.addEventListener('state', (ev) => {
    load(JSON.parse(ev.data));
    backoff = 500;
    setLive(true);
    render();
    // Only once the fresh state is drawn: until then the banner says why
    // the rows are old.
    if (stopped) { stopped = false; setBanner(null); }
  });
  source.addEventListener('stopping', () => {
    stopped = true;
    returnMs = RETURN_MS;
    const at = new Date().toLocaleTimeString();
    setBanner(`The publisher is stopping (${at}). The rows below are as it last saw them; this page reconnects as soon as a publisher answers here again.`);
    setLive(false, 'publisher stopped');
    // The stream ends next: closed here, the browser's own retry does not
    // race the look for the publisher's return.
    source.close();
    awaitReturn();
  });
  source.addEventListener('change', (ev) => {
    const c = JSON.parse(ev.data);
    apply(c);
    // Drawn at once: the page is as live as the stream.
    if (!renderPending) renderRow(c.endpoint.host, c.endpoint.service);
    clocksWithChange();
  });
  source.onerror = () => {
    // After a `stopping` the page looks for the publisher's return itself
    // (a reconnect that failed again comes back here).
    setLive(false, stopped ? 'publisher stopped' : undefined);
    // The browser retries a dropped stream by itself; one it gave up on
    // (an error status: publisher overloaded, or the session expired) is
    // opened again here, after a look at whether the session still holds.
    if (source.readyState !== EventSource.CLOSED) return;
    source.close();
    setTimeout(async () => {
      try {
        const r = await fetch('/api/hosts', { credentials: 'same-origin' });
        if (r.status === 401) { location.reload(); return; }
      } catch (e) { /* down: try the stream again */ }
      connect();
    }, backoff);
    backoff = Math.min(backoff * 2, 5000);
  };
}

connect();
// Uptimes and "ago" move with the clock; the publisher is not asked.
armClock();
setInterval(refresh, 30000);
