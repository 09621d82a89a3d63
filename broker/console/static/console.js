// The cloudseat console: a venue's live seat map, money and history, a provider's fleet with drain and undrain and
// its history, and the operator's view of the whole region. Charts are drawn by chart.js (served here too).
// Talks only to this server's /api/ with the tenant token as "Authorization: Bearer"; the token comes from the
// sign-in box or ?token= (then dropped from the address bar) and is kept in sessionStorage (this tab only).
// Live updates are Server-Sent Events read through fetch(), so the token travels in a header, never in a URL.
'use strict';

const TOKEN_KEY = 'cloudseat.console.token';
const $ = (id) => document.getElementById(id);

// For automation and monitoring: what the page shows now.
// cost and statement: the totals per currency the page shows; charts: the history charts drawn, by element id.
window.cloudseatConsole = {
  view: null, ready: false, seats: {}, hosts: {}, error: null, cost: null, statement: null, charts: {}, region: null,
};

class ApiError extends Error {
  constructor(status, message, field) { super(message); this.status = status; this.field = field; }
}

let token = null;
let streamAbort = null;
const timeLeft = new Map(); // seat_id -> {seconds, at (performance.now())}

function takeToken() {
  const url = new URL(location.href);
  const given = url.searchParams.get('token');
  if (given) {
    sessionStorage.setItem(TOKEN_KEY, given.trim());
    url.searchParams.delete('token');
    history.replaceState(null, '', url.pathname + url.search + url.hash);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function headers(extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  const body = await response.json().catch(() => ({ error: `${path}: ${response.status} ${response.statusText}` }));
  if (!response.ok) throw new ApiError(response.status, body.error || response.statusText, body.field || '');
  return body;
}

function showError(err) {
  const box = $('error');
  if (!err) { box.hidden = true; box.textContent = ''; window.cloudseatConsole.error = null; return; }
  box.hidden = false;
  box.textContent = err.message || String(err);
  window.cloudseatConsole.error = { status: err.status || 0, message: box.textContent };
  if (err.status === 401) signIn();
}

function signIn() {
  sessionStorage.removeItem(TOKEN_KEY);
  token = null;
  $('login').hidden = false;
  $('venue').hidden = true;
  $('provider').hidden = true;
  $('region').hidden = true;
  $('audit').hidden = true;
}

// Server-Sent Events over fetch (EventSource cannot send a header); reconnects after a second until aborted.
async function stream(path, onEvent, badge, signal) {
  while (!signal.aborted) {
    try {
      const response = await fetch(path, { headers: headers({ Accept: 'text/event-stream' }), signal });
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        throw new ApiError(response.status, body.error || response.statusText, body.field || '');
      }
      badge.textContent = 'live';
      badge.classList.add('live');
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let event = 'message';
          const data = [];
          for (const line of block.split('\n')) {
            if (line.startsWith('event:')) event = line.slice(6).trim();
            else if (line.startsWith('data:')) data.push(line.slice(5).trim());
          }
          if (data.length) onEvent(event, JSON.parse(data.join('\n')));
        }
      }
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof ApiError && err.status < 500) { showError(err); return; }
    }
    badge.textContent = 'reconnecting…';
    badge.classList.remove('live');
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

// -- formatting ---------------------------------------------------------------------------------------------------

const dash = '—';
const pct = (x) => (x === null || x === undefined ? dash : `${(100 * x).toFixed(1)}%`);
const num = (x, digits = 0) => (x === null || x === undefined ? dash : Number(x).toFixed(digits));
function clock(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}:${String(m).padStart(2, '0')}:${String(r).padStart(2, '0')}` : `${m}:${String(r).padStart(2, '0')}`;
}
function seconds(s) {
  if (s === null || s === undefined) return dash;
  return s < 90 ? `${s.toFixed(s < 10 ? 1 : 0)} s` : `${(s / 60).toFixed(1)} min`;
}
function cell(tr, text) { const td = document.createElement('td'); td.textContent = text; tr.appendChild(td); return td; }

// -- venue --------------------------------------------------------------------------------------------------------

function seatCard(seat) {
  let card = document.querySelector(`.seat[data-seat="${CSS.escape(seat.seat_id)}"]`);
  if (!card) {
    card = document.createElement('div');
    card.className = 'seat';
    card.dataset.seat = seat.seat_id;
    $('seat-map').appendChild(card);
  }
  card.dataset.state = seat.state;
  card.dataset.session = seat.session_id || '';
  card.replaceChildren();
  const line = (label, value, cls) => {
    const div = document.createElement('div');
    if (cls) div.className = cls;
    div.textContent = label ? `${label}: ${value}` : value;
    card.appendChild(div);
    return div;
  };
  const head = line('', seat.seat_id, 'id');
  const state = document.createElement('span');
  state.className = 'state';
  state.textContent = seat.state;
  head.appendChild(state);
  line('zone', `${seat.zone_id} (${seat.tier}, ≤ ${seat.latency_cap_ms} ms)`);
  if (seat.state === 'IDLE') { timeLeft.delete(seat.seat_id); return; }
  line('game', seat.game_id);
  line('site', seat.site_id || (seat.pending_reason ? `waiting: ${seat.pending_reason}` : dash));
  const latency = line('latency', seat.latency_ms === null ? dash : `${seat.latency_ms} ms`);
  if (seat.latency_ms !== null && seat.latency_ms > seat.latency_cap_ms) latency.classList.add('over');
  line('fps', num(seat.fps, 1), 'fps');
  line('time left', seat.time_left_s === null ? 'no limit' : clock(seat.time_left_s), 'time-left');
  if (seat.time_left_s === null) timeLeft.delete(seat.seat_id);
  else timeLeft.set(seat.seat_id, { seconds: seat.time_left_s, at: performance.now(), counting: seat.state === 'STREAMING' });
}

function setSeat(seat) {
  seatCard(seat);
  window.cloudseatConsole.seats[seat.seat_id] = seat.state;
}

function tickTimeLeft() {
  for (const [seatId, t] of timeLeft) {
    if (!t.counting) continue;
    const el = document.querySelector(`.seat[data-seat="${CSS.escape(seatId)}"] .time-left`);
    if (el) el.textContent = `time left: ${clock(t.seconds - (performance.now() - t.at) / 1000)}`;
  }
}

// -- history charts -----------------------------------------------------------------------------------------------

const CHART_FORMATS = { pct: (v) => `${Math.round(100 * v)}%`, num: (v) => num(v, v < 10 && v % 1 ? 1 : 0), seconds };

function chart(id, series, format, options = {}) {
  window.cloudseatChart.draw($(id), { series, format: CHART_FORMATS[format], ...options });
  window.cloudseatConsole.charts[id] = series.map((s) => ({
    name: s.name, points: s.points.filter((p) => p[1] !== null).length,
  }));
}

// Draw now and again every minute (the history gains a row a minute) until the view is left.
function everyMinute(draw, signal) {
  draw().catch(showError);
  const timer = setInterval(() => draw().catch(showError), 60_000);
  signal.addEventListener('abort', () => clearInterval(timer));
}

function business(box, data) {
  box.replaceChildren();
  if (data.available === false) {
    const p = document.createElement('p');
    p.className = 'unavailable';
    p.textContent = `Not available: ${data.reason}.`;
    box.appendChild(p);
    return;
  }
  for (const [key, value] of Object.entries(data.summary || {})) {
    const p = document.createElement('p');
    p.textContent = `${key.replaceAll('_', ' ')}: ${value}`;
    box.appendChild(p);
  }
  const rows = data.rows || [];
  if (!rows.length) {
    const p = document.createElement('p');
    p.textContent = data.summary ? '' : 'Nothing yet.';
    box.appendChild(p);
    return;
  }
  const table = document.createElement('table');
  const columns = Object.keys(rows[0]);
  const head = table.createTHead().insertRow();
  for (const c of columns) { const th = document.createElement('th'); th.textContent = c.replaceAll('_', ' '); head.appendChild(th); }
  const body = table.createTBody();
  for (const row of rows) { const tr = body.insertRow(); for (const c of columns) cell(tr, row[c] ?? dash); }
  box.appendChild(table);
}

async function showVenue(venueId, signal) {
  $('venue').hidden = false;
  $('seat-map').replaceChildren();
  $('statement-from').value = '';
  $('statement-to').value = '';
  window.cloudseatConsole.seats = {};
  const base = `/api/venues/${encodeURIComponent(venueId)}`;
  // Before the stream starts: its first "cost" event fills in the days and submits.
  $('statement-form').onsubmit = async (e) => {
    e.preventDefault();
    try {
      const q = new URLSearchParams({ from: $('statement-from').value, to: $('statement-to').value });
      const statement = await api(`${base}/statements?${q}`);
      business($('statements'), statement);
      window.cloudseatConsole.statement = { from: q.get('from'), to: q.get('to'), totals: statement.totals };
      showError(null);
    } catch (err) { showError(err); }
  };
  let serviceDue = null; // a seat's change may move the service level: re-read it, at most every 2 s
  const refreshService = async () => {
    const service = await api(`${base}/service-level`);
    const tbody = $('service').tBodies[0];
    tbody.replaceChildren();
    for (const z of service.zones) {
      const tr = tbody.insertRow();
      tr.dataset.zone = z.zone_id;
      cell(tr, z.zone_id); cell(tr, z.tier); cell(tr, `${z.latency_cap_ms} ms`);
      cell(tr, z.playout.toLowerCase().replace('_', ' ')); cell(tr, z.sessions);
      cell(tr, pct(z.sessions_share)); cell(tr, num(z.minutes, 1)); cell(tr, pct(z.minutes_share));
    }
  };
  stream(`${base}/events`, (event, data) => {
    if (event === 'seats') {
      $('seat-map').replaceChildren();
      window.cloudseatConsole.seats = {};
      data.seats.forEach(setSeat);
      window.cloudseatConsole.ready = true;
    } else if (event === 'seat') {
      setSeat(data);
      serviceDue ||= setTimeout(() => { serviceDue = null; refreshService().catch(showError); }, 2000);
    } else if (event === 'cost') {
      showCost(data);
    } else if (event === 'stats') {
      for (const card of document.querySelectorAll('.seat')) {
        const fps = data.fps[card.dataset.session];
        const el = card.querySelector('.fps');
        if (el && fps !== undefined) el.textContent = `fps: ${fps.toFixed(1)}`;
      }
    }
  }, $('live'), signal);
  everyMinute(async () => {
    const h = await api(`${base}/history`);
    const options = { timeZone: h.time_zone };
    $('venue-clock').textContent = `times in ${h.time_zone}`;
    chart('chart-sessions', h.sessions, 'num', options);
    chart('chart-queue', h.queue_length, 'num', options);
    chart('chart-wait', h.mean_wait_s, 'seconds', options);
    chart('chart-service', h.service_level, 'pct', { ...options, max: 1 });
  }, signal);
  const [, leases] = await Promise.all([refreshService(), api(`${base}/leases`)]);
  business($('leases'), leases);
}

// The venue's day (YYYY-MM-DD in its time zone) plus `days`.
function dayPlus(day, days) {
  return new Date(Date.parse(`${day}T00:00:00Z`) + days * 86400000).toISOString().slice(0, 10);
}

// Today's cost as pushed by the venue's stream: shown at once; the first one sets the statement's days to this
// month of the venue's calendar; when the ledger moved, a statement that covers today is read again.
function showCost(data) {
  business($('cost'), data);
  window.cloudseatConsole.cost = { day: data.day, time_zone: data.time_zone, totals: data.totals };
  const badge = $('cost-live');
  badge.textContent = 'live';
  badge.classList.add('live');
  const from = $('statement-from'), to = $('statement-to');
  if (!from.value || !to.value) {
    from.value = `${data.day.slice(0, 8)}01`;
    to.value = dayPlus(data.day, 1);
    $('statement-form').requestSubmit();
  } else if (data.ledger_changed && from.value <= data.day && data.day < to.value) {
    $('statement-form').requestSubmit();
  }
}

// -- provider -----------------------------------------------------------------------------------------------------

function renderFleet(fleet) {
  const sites = $('sites').tBodies[0];
  sites.replaceChildren();
  for (const s of fleet.sites) {
    const tr = sites.insertRow();
    tr.dataset.site = s.site_id;
    cell(tr, `${s.site_id} (${s.name})`); cell(tr, s.region || dash); cell(tr, s.hosts); cell(tr, s.hosts_serving);
    cell(tr, `${s.slots_used} / ${s.slots}`); cell(tr, pct(s.utilisation));
  }
  const hosts = $('hosts').tBodies[0];
  hosts.replaceChildren();
  window.cloudseatConsole.hosts = {};
  for (const h of fleet.hosts) {
    const tr = hosts.insertRow();
    tr.dataset.host = h.host_id;
    tr.dataset.drained = String(h.drained);
    const state = h.status + (h.drained ? `, ${drainNote(h)}` : '') + (h.draining ? ', draining' : '');
    cell(tr, h.host_id); cell(tr, h.site_id); cell(tr, h.gpu_class); cell(tr, state).className = 'host-state';
    cell(tr, `${h.sessions} (${h.slots - h.free_slots}/${h.slots} slots)`); cell(tr, pct(h.utilisation));
    cell(tr, pct(h.gpu_load));
    cell(tr, [h.images.join(', '), ...h.fetches.map((f) => `fetching ${f.text}`)].filter(Boolean).join('; ') || dash);
    const button = document.createElement('button');
    button.type = 'button';
    button.className = h.drained ? 'undrain' : 'drain';
    button.textContent = h.drained ? 'Undrain' : 'Drain';
    button.onclick = () => drain(h.host_id, !h.drained, button);
    cell(tr, '').appendChild(button);
    window.cloudseatConsole.hosts[h.host_id] = { status: h.status, drained: h.drained, sessions: h.sessions };
  }
  window.cloudseatConsole.ready = true;
}

// A drained host: the sessions still on it and when they move (the drain's deadline), or that they go on.
function drainNote(h) {
  const left = `${h.sessions} session${h.sessions === 1 ? '' : 's'} left`;
  const when = h.drain_deadline ? `moving at ${new Date(h.drain_deadline).toLocaleString()}` : 'no deadline';
  return `drained: ${left}, ${when}`;
}

let refreshFleet = null;

async function drain(hostId, drained, button) {
  button.disabled = true;
  try {
    const path = `/api/hosts/${encodeURIComponent(hostId)}/${drained ? 'drain' : 'undrain'}`;
    // A deadline in whole minutes from now; the broker warns the patrons 5 and 1 minute ahead and moves them then.
    const minutes = Math.max(0, Math.round(Number($('drain-deadline-min').value) || 0));
    const body = drained
      ? JSON.stringify({ reason: $('drain-reason').value, deadline_s: minutes * 60 })
      : '{}';
    await api(path, { method: 'POST', body, headers: { 'Content-Type': 'application/json' } });
    showError(null);
    if (refreshFleet) await refreshFleet();
  } catch (err) {
    showError(err);
  } finally {
    button.disabled = false;
  }
}

async function showProvider(providerId, signal) {
  $('provider').hidden = false;
  window.cloudseatConsole.hosts = {};
  const base = `/api/providers/${encodeURIComponent(providerId)}`;
  refreshFleet = async () => renderFleet(await api(`${base}/fleet`));
  const renderRevenue = (data) => { window.cloudseatConsole.revenue = data; business($('revenue'), data); };
  stream(`${base}/events`, (event, data) => {
    if (event === 'fleet') renderFleet(data);
    if (event === 'revenue') renderRevenue(data);  // on connecting, then as its ledger grows
  }, $('fleet-live'), signal);
  everyMinute(async () => {
    const h = await api(`${base}/history`);
    chart('chart-provider-util', h.utilisation, 'pct', { max: 1 });
    chart('chart-provider-hosts', h.hosts_online, 'num');
  }, signal);
}

// -- the region (the operator's) ------------------------------------------------------------------------------------

async function showRegion(signal) {
  $('region').hidden = false;
  const now = await api('/api/region');
  const sites = $('region-sites').tBodies[0];
  sites.replaceChildren();
  for (const s of now.sites) {
    const tr = sites.insertRow();
    tr.dataset.site = s.site_id;
    cell(tr, `${s.site_id} (${s.name})`); cell(tr, s.provider_id); cell(tr, s.region || dash); cell(tr, s.hosts);
    cell(tr, s.hosts_serving); cell(tr, `${s.slots_used} / ${s.slots}`); cell(tr, pct(s.utilisation));
  }
  const venues = $('region-venues').tBodies[0];
  venues.replaceChildren();
  for (const v of now.venues) {
    const tr = venues.insertRow();
    tr.dataset.venue = v.venue_id;
    cell(tr, `${v.venue_id} (${v.name})`); cell(tr, v.time_zone); cell(tr, v.seats); cell(tr, v.sessions);
    cell(tr, v.queued); cell(tr, v.serving); cell(tr, pct(v.service_level));
  }
  window.cloudseatConsole.region = { sites: now.sites.length, venues: now.venues.length };
  everyMinute(async () => {
    const h = await api('/api/region/history');
    chart('chart-region-util', h.utilisation, 'pct', { max: 1 });
    chart('chart-region-sessions', h.sessions, 'num');
    chart('chart-region-queue', h.queue_length, 'num');
    chart('chart-region-wait', h.mean_wait_s, 'seconds');
    chart('chart-region-service', h.service_level, 'pct', { max: 1 });
  }, signal);
  window.cloudseatConsole.ready = true;
}

// -- audit trail --------------------------------------------------------------------------------------------------

function auditQuery(after) {
  const q = new URLSearchParams();
  for (const [name, id] of [['action', 'audit-action'], ['actor', 'audit-actor'], ['target', 'audit-target']]) {
    if ($(id).value.trim()) q.set(name, $(id).value.trim());
  }
  for (const [name, id] of [['from', 'audit-from'], ['to', 'audit-to']]) {
    if ($(id).value) q.set(name, new Date($(id).value).toISOString());
  }
  if (after) q.set('after', String(after));
  return q;
}

async function showAudit(after = 0) {
  $('audit').hidden = false;
  const body = await api(`/api/audit?${auditQuery(after)}`);
  const rows = $('audit-rows').tBodies[0];
  if (!after) rows.replaceChildren();
  for (const e of body.entries) {
    const tr = document.createElement('tr');
    for (const text of [e.seq, new Date(e.at).toLocaleString(), e.actor, e.tenant, e.action, e.target,
                        JSON.stringify(e.detail), e.peer, e.chain_no ? `#${e.chain_no} ${e.hash.slice(0, 12)}…` : 'sealing…']) {
      cell(tr, String(text));
    }
    rows.appendChild(tr);
  }
  window.cloudseatConsole.audit = rows.rows.length;
  window.cloudseatConsole.ready = true;
  const more = $('audit-more');
  more.hidden = body.next === null;
  more.onclick = () => showAudit(body.next).catch(showError);
}

async function exportAudit() {
  const response = await fetch(`/api/audit.jsonl?${auditQuery(0)}`, { headers: headers() });
  if (!response.ok) throw new ApiError(response.status, (await response.json()).error, '');
  const link = document.createElement('a');
  link.href = URL.createObjectURL(await response.blob());
  link.download = 'cloudseat-audit.jsonl';
  link.click();
  URL.revokeObjectURL(link.href);
}

$('audit-form').addEventListener('submit', (e) => { e.preventDefault(); showAudit().catch(showError); });
$('audit-export').addEventListener('click', () => exportAudit().catch(showError));

// -- navigation ---------------------------------------------------------------------------------------------------

function route(who) {
  const [kind, id] = location.hash.slice(1).split('/').map(decodeURIComponent);
  if (kind === 'audit' || kind === 'region') return { kind };
  if ((kind === 'venue' || kind === 'provider') && id) return { kind, id };
  if (who.venues.length) return { kind: 'venue', id: who.venues[0].venue_id };
  if (who.providers.length) return { kind: 'provider', id: who.providers[0].provider_id };
  return null;
}

async function show(who) {
  if (streamAbort) streamAbort.abort();
  streamAbort = new AbortController();
  $('venue').hidden = true;
  $('provider').hidden = true;
  $('region').hidden = true;
  $('audit').hidden = true;
  window.cloudseatConsole.ready = false;
  window.cloudseatConsole.charts = {};
  const where = route(who);
  window.cloudseatConsole.view = where;
  if (!where) { showError(new Error('This token sees no venue or provider.')); return; }
  if (where.id) $('pick').value = `${where.kind}/${where.id}`;
  document.title = where.id ? `cloudseat · ${where.kind} ${where.id}`
    : where.kind === 'region' ? 'cloudseat · region' : 'cloudseat · audit trail';
  try {
    showError(null);
    if (where.kind === 'audit') await showAudit();
    else if (where.kind === 'region') await showRegion(streamAbort.signal);
    else if (where.kind === 'venue') await showVenue(where.id, streamAbort.signal);
    else await showProvider(where.id, streamAbort.signal);
  } catch (err) {
    showError(err);
  }
}

async function start() {
  token = takeToken();
  $('login').hidden = true;
  let who;
  try {
    who = await api('/api/whoami');
  } catch (err) {
    showError(err);
    return;
  }
  $('who').textContent = who.trusted ? 'authentication off' : `${who.role} ${who.subject}`;
  $('signout').hidden = who.trusted;
  $('region-link').hidden = !who.region;
  const pick = $('pick');
  pick.replaceChildren();
  for (const v of who.venues) pick.add(new Option(`venue ${v.name} (${v.venue_id})`, `venue/${v.venue_id}`));
  for (const p of who.providers) pick.add(new Option(`provider ${p.name} (${p.provider_id})`, `provider/${p.provider_id}`));
  pick.onchange = () => { location.hash = pick.value; };
  window.onhashchange = () => show(who);
  await show(who);
}

$('login').addEventListener('submit', (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $('token').value.trim());
  start();
});
$('signout').addEventListener('click', () => { if (streamAbort) streamAbort.abort(); signIn(); });
setInterval(tickTimeLeft, 1000);
start();
