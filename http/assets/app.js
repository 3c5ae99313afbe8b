// P³ dashboard: a static page over the node's HTTP/JSON API (docs/http.md).
// No framework and no build step: the server embeds this file as is.
'use strict';

(() => {
  // ---------------------------------------------------------------- helpers

  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

  // Builds DOM with text nodes only, so nothing the server sends (names,
  // metadata, errors) is ever parsed as HTML.
  function build(node, attrs, children) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children.flat()) {
      if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
    }
    return node;
  }
  const h = (tag, attrs = {}, ...children) => build(document.createElement(tag), attrs, children);
  const s = (tag, attrs = {}, ...children) =>
    build(document.createElementNS('http://www.w3.org/2000/svg', tag), attrs, children);

  const setText = (sel, text) => { const n = $(sel); if (n) n.textContent = text; };

  // ------------------------------------------------------------- formatting

  const DASH = '—';
  const isNum = (x) => typeof x === 'number' && Number.isFinite(x);

  function fmtBytes(n) {
    if (!isNum(n)) return DASH;
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let i = 0;
    let v = Math.abs(n);
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    const digits = i === 0 ? 0 : v < 10 ? 2 : v < 100 ? 1 : 0;
    return `${n < 0 ? '-' : ''}${v.toFixed(digits)} ${units[i]}`;
  }

  function fmtMs(ms) {
    if (!isNum(ms)) return DASH;
    if (ms < 1) return `${ms.toFixed(2)} ms`;
    if (ms < 10) return `${ms.toFixed(1)} ms`;
    if (ms < 1000) return `${Math.round(ms)} ms`;
    const sec = ms / 1000;
    if (sec < 60) return `${sec.toFixed(sec < 10 ? 2 : 1)} s`;
    return fmtSecs(sec);
  }

  // Long durations (uptime, old jobs) read better as the two largest units.
  function fmtSecs(secs) {
    if (!isNum(secs)) return DASH;
    const t = Math.floor(secs);
    const d = Math.floor(t / 86400), hr = Math.floor(t / 3600) % 24;
    const m = Math.floor(t / 60) % 60, sec = t % 60;
    if (d) return `${d} d ${hr} h`;
    if (hr) return `${hr} h ${m} min`;
    if (m) return `${m} min ${sec} s`;
    return `${sec} s`;
  }

  function fmtNum(n, digits = 0) {
    if (!isNum(n)) return DASH;
    return n.toLocaleString('en-US', { maximumFractionDigits: digits });
  }

  // Rates are small fractions as often as thousands; keep ~3 significant digits.
  function fmtRate(n) {
    if (!isNum(n)) return DASH;
    const a = Math.abs(n);
    return fmtNum(n, a >= 100 ? 0 : a >= 10 ? 1 : 2);
  }

  function fmtTime(ms) {
    if (!isNum(ms) || ms <= 0) return DASH;
    const d = new Date(ms);
    const p = (x) => String(x).padStart(2, '0');
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
      `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }

  // Peer ids all start with the same multihash prefix (12D3KooW...); their
  // tail is what tells them apart.
  const shortId = (id) => (typeof id === 'string' && id.length > 10 ? `…${id.slice(-8)}` : String(id ?? DASH));

  // Encodes each segment of an object name but keeps its '/' separators, so
  // the server sees the name's hierarchy as the spec's {name} does.
  const encName = (name) => String(name).split('/').map(encodeURIComponent).join('/');
  const encPath = (ns, name) => `${encodeURIComponent(ns)}/${encName(name)}`;

  function splitPath(path) {
    const i = path.indexOf('/');
    return i < 0 ? [path, ''] : [path.slice(0, i), path.slice(i + 1)];
  }

  // FNV-1a: a cheap, stable hash so a peer keeps its place on the ring
  // between polls and page loads.
  function hash32(str) {
    let x = 0x811c9dc5;
    for (let i = 0; i < str.length; i++) {
      x ^= str.charCodeAt(i);
      x = Math.imul(x, 0x01000193);
    }
    return x >>> 0;
  }

  const PALETTE = ['#2563eb', '#dc2626', '#059669', '#d97706', '#7c3aed', '#db2777', '#0891b2', '#65a30d', '#475569', '#ea580c'];

  // Hands out colours in order of first use, so a chart's first lines never
  // share one (hashing keys would) and a line keeps its colour as others come.
  function palette() {
    const used = new Map();
    return (key) => {
      if (!used.has(key)) used.set(key, PALETTE[used.size % PALETTE.length]);
      return used.get(key);
    };
  }

  // -------------------------------------------------------- token and API

  const TOKEN_KEY = 'p3.token';
  let token = null;

  function readToken() {
    const params = new URLSearchParams(location.hash.slice(1));
    const fromHash = params.get('token');
    if (fromHash) {
      sessionStorage.setItem(TOKEN_KEY, fromHash);
      // The fragment never reaches the server, but it would stay in the
      // history and in any link copied from the address bar.
      history.replaceState(null, '', location.pathname + location.search);
    }
    return fromHash || sessionStorage.getItem(TOKEN_KEY);
  }

  class ApiError extends Error {
    constructor(message, status, kind, context) {
      super(message);
      this.status = status;
      this.kind = kind;
      this.context = context;
    }
  }

  const API_TIMEOUT_MS = 15000;

  // options.body (a plain object) is sent as JSON; options.raw returns the
  // Response itself for callers that want bytes or text. Calls time out (but
  // for options.timeout = 0), so a node that hangs cannot stall a poll loop.
  async function api(path, options = {}) {
    const { raw, body, headers, timeout = API_TIMEOUT_MS, ...rest } = options;
    const init = { ...rest, headers: { ...headers } };
    if (timeout && window.AbortSignal && AbortSignal.timeout) init.signal = AbortSignal.timeout(timeout);
    if (token) init.headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const context = `${init.method || 'GET'} ${path}`;
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      const why = e.name === 'TimeoutError' ? `no answer within ${timeout / 1000} s` : e.message;
      throw new ApiError(`cannot reach the node (${why})`, 0, 'network', context);
    }
    if (!res.ok) throw await errorOf(res, context);
    if (raw) return res;
    if (res.status === 204) return null;
    const text = await res.text();
    if (!text) return null;
    try { return JSON.parse(text); } catch { return text; }
  }

  async function errorOf(res, context) {
    let message = `${res.status} ${res.statusText}`.trim();
    let kind = '';
    try {
      const text = await res.text();
      try {
        const j = JSON.parse(text);
        if (j && j.error) { message = j.error; kind = j.kind || ''; }
      } catch {
        if (text.trim()) message = text.trim().split('\n')[0];
      }
    } catch { /* the status line is all there is */ }
    if (res.status === 401) showTokenForm();
    return new ApiError(message, res.status, kind, context);
  }

  // ---------------------------------------------------------- error banner

  let lastError = { text: '', count: 0 };

  function showError(err) {
    const text = err && err.message ? err.message : String(err);
    // A poll failing every second must not flood the page: repeat the same
    // message with a count instead.
    lastError = text === lastError.text && !$('#error').hidden
      ? { text, count: lastError.count + 1 } : { text, count: 1 };
    setText('#error-text', text);
    setText('#error-context', err && err.context ? `(${err.context})` : '');
    setText('#error-count', lastError.count > 1 ? `×${lastError.count}` : '');
    $('#error').hidden = false;
  }

  function hideError() {
    $('#error').hidden = true;
    lastError = { text: '', count: 0 };
  }

  // Click handlers are async; their failures belong in the banner, not the console.
  const guard = (fn) => async (...args) => {
    try { await fn(...args); } catch (e) { showError(e); }
  };

  // --------------------------------------------------------------- polling

  // Runs fn, then waits interval ms, then again: a slow answer delays the
  // next poll instead of stacking requests up behind it.
  class Poller {
    constructor(fn, interval) {
      this.fn = fn;
      this.interval = interval;
      this.running = false;
      this.gen = 0;
      this.timer = null;
    }

    start() {
      if (this.running) return;
      this.running = true;
      this.tick(++this.gen);
    }

    stop() {
      this.running = false;
      this.gen++;
      clearTimeout(this.timer);
    }

    restart() { this.stop(); this.start(); }

    async tick(gen) {
      try { await this.fn(); } catch (e) { showError(e); }
      if (this.running && gen === this.gen) {
        this.timer = setTimeout(() => this.tick(gen), this.interval);
      }
    }
  }

  // ------------------------------------------------------------------ tabs

  let activeTab = 'cluster';
  const tabs = {}; // name -> { enter(), leave() }

  function showTab(name) {
    if (!tabs[name]) return;
    if (tabs[activeTab] && activeTab !== name) tabs[activeTab].leave();
    activeTab = name;
    for (const a of $$('a[data-tab]')) {
      a.classList.toggle('active', a.dataset.tab === name);
      a.setAttribute('aria-selected', String(a.dataset.tab === name));
    }
    for (const sec of $$('section.tab')) sec.hidden = sec.id !== `tab-${name}`;
    tabs[name].enter();
  }

  // ------------------------------------------------------------- line chart

  // Draws series of numbers (null = no sample) into an SVG with a light grid
  // and the max of the y axis. Plotted by sample index: every series shares
  // the poll clock, so the x axis is time without needing a time scale.
  function drawLines(svg, series, { capacity, yFmt = fmtRate, axes = true, fill = false, minMax = 0, span = '' } = {}) {
    // Drawn in the element's own pixels, so text and strokes are not stretched.
    const W = svg.clientWidth || 300, H = svg.clientHeight || 80;
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    const pad = axes ? { l: 44, r: 10, t: 10, b: span ? 22 : 10 } : { l: 3, r: 5, t: 5, b: 3 };
    const all = series.flatMap((x) => x.values).filter(isNum);
    const max = Math.max(minMax, ...all, 0) || 1;
    const n = Math.max(capacity || 0, ...series.map((x) => x.values.length), 2);
    const X = (i) => pad.l + (i / (n - 1)) * (W - pad.l - pad.r);
    const Y = (v) => H - pad.b - (v / max) * (H - pad.t - pad.b);
    const parts = [];
    if (axes) {
      for (const f of [0, 0.5, 1]) {
        parts.push(s('line', { class: 'grid', x1: pad.l, x2: W - pad.r, y1: Y(max * f), y2: Y(max * f) }));
        parts.push(s('text', { class: 'axis', x: pad.l - 6, y: Y(max * f) + 4, 'text-anchor': 'end' }, yFmt(max * f)));
      }
      if (span) {
        parts.push(s('text', { class: 'axis', x: pad.l, y: H - 6 }, span));
        parts.push(s('text', { class: 'axis', x: W - pad.r, y: H - 6, 'text-anchor': 'end' }, 'now'));
      }
    }
    for (const ser of series) {
      // Right-align so the newest sample is always at the right edge.
      const offset = n - ser.values.length;
      const runs = [[]];
      ser.values.forEach((v, i) => {
        if (isNum(v)) runs[runs.length - 1].push([X(i + offset), Y(v)]);
        else if (runs[runs.length - 1].length) runs.push([]);
      });
      for (const run of runs.filter((r) => r.length)) {
        const pts = run.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' ');
        if (fill) {
          const base = H - pad.b;
          const area = `${run[0][0].toFixed(1)},${base} ${pts} ${run[run.length - 1][0].toFixed(1)},${base}`;
          parts.push(s('polygon', { class: 'area', points: area, fill: ser.color }));
        }
        parts.push(s('polyline', { class: 'series', points: pts, stroke: ser.color, 'data-key': ser.key }));
      }
      // The newest value as a dot: visible even while a series has one sample.
      const tail = runs[runs.length - 1];
      if (tail.length && ser.values.length && isNum(ser.values[ser.values.length - 1])) {
        const [x, y] = tail[tail.length - 1];
        parts.push(s('circle', { class: 'head', cx: x, cy: y, r: 3, fill: ser.color }));
      }
    }
    svg.replaceChildren(...parts);
  }

  // --------------------------------------------------------------- header

  let node = null;

  async function pollNode() {
    node = await api('/api/v1/node');
    setText('#node-short', shortId(node.peer_id));
    $('#node-short').title = node.peer_id || '';
    // The spec's node status has no role; show one if the server adds it.
    setText('#node-role', node.role || 'node');
    renderNodeCards();
  }

  function renderNodeCards() {
    if (!node) return;
    setText('#node-id', node.peer_id || DASH);
    setText('#node-addrs', (node.listen_addrs || []).join('  '));
    setText('#node-uptime', fmtSecs(node.uptime_secs));
    setText('#node-connected', fmtNum(node.connected_peers));
    setText('#node-routing', fmtNum(node.routing_table_size));
    setText('#node-volatile', fmtBytes(node.volatile_bytes));
  }

  // -------------------------------------------------------------- cluster

  let peers = [];
  let owners = []; // of the last owners lookup, primary first

  async function pollPeers() {
    const list = await api('/api/v1/peers');
    peers = Array.isArray(list) ? list : [];
    renderPeersTable();
    renderRing();
  }

  function renderPeersTable() {
    const yes = (b) => h('span', { class: b ? 'yes' : 'no' }, b ? 'yes' : 'no');
    const rows = [...peers]
      .sort((a, b) => Number(b.connected) - Number(a.connected) || a.peer_id.localeCompare(b.peer_id))
      .map((p) => h('tr', {
        class: `peer${owners.includes(p.peer_id) ? ' owner' : ''}`,
        'data-peer-id': p.peer_id,
      },
      h('td', { class: 'mono', title: p.peer_id }, shortId(p.peer_id)),
      h('td', {}, yes(p.connected)),
      h('td', {}, yes(p.in_routing_table)),
      h('td', { class: 'num' }, isNum(p.rtt_us) ? fmtMs(p.rtt_us / 1000) : DASH),
      h('td', { class: 'mono tiny' }, (p.addrs || []).map((a) => h('div', {}, a)))));
    $('#peers tbody').replaceChildren(...rows);
    if (!rows.length) {
      $('#peers tbody').append(h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No peers known yet.')));
    }
  }

  // Spreads peers whose hashed angles collide, so their circles and labels
  // stay apart; the order around the ring (and so stability) is kept.
  function ringAngles(ids) {
    const items = ids.map((id) => ({ id, a: (hash32(id) / 2 ** 32) * 2 * Math.PI }))
      .sort((x, y) => x.a - y.a);
    const gap = Math.min((2 * Math.PI) / Math.max(items.length, 1), 0.35);
    for (let i = 1; i < items.length; i++) {
      if (items[i].a - items[i - 1].a < gap) items[i].a = items[i - 1].a + gap;
    }
    return new Map(items.map((x) => [x.id, x.a]));
  }

  function renderRing() {
    const svg = $('#ring');
    const CX = 240, CY = 210, R = 150; // the viewBox is 480×420: room for labels
    const self = node && node.peer_id;
    const angles = ringAngles(peers.map((p) => p.peer_id));
    const primary = owners[0];
    const ownerClass = (id) => (id === primary ? ' owner primary' : owners.includes(id) ? ' owner' : '');
    const spokes = [], labels = [], dots = [];

    for (const p of peers) {
      const a = angles.get(p.peer_id);
      const x = CX + R * Math.cos(a), y = CY + R * Math.sin(a);
      if (p.connected) {
        spokes.push(s('line', { class: `spoke${ownerClass(p.peer_id)}`, x1: CX, y1: CY, x2: x, y2: y }));
        if (isNum(p.rtt_us)) {
          // At 60% of the spoke, so labels of nearby peers do not meet at the centre.
          const lx = CX + R * 0.6 * Math.cos(a), ly = CY + R * 0.6 * Math.sin(a);
          labels.push(s('text', { class: 'rtt', x: lx, y: ly, 'text-anchor': 'middle', dy: '-3' }, fmtMs(p.rtt_us / 1000)));
        }
      }
      // Labels sit outside the ring, anchored away from it on the sides.
      const cos = Math.cos(a);
      const lx = CX + (R + 18) * cos, ly = CY + (R + 24) * Math.sin(a);
      const anchor = cos > 0.3 ? 'start' : cos < -0.3 ? 'end' : 'middle';
      dots.push(s('g', {
        class: `ring-peer ${p.connected ? 'connected' : 'faded'}${ownerClass(p.peer_id)}`,
        'data-peer-id': p.peer_id,
      },
      s('title', {}, `${p.peer_id}${p.connected ? '' : ' (not connected)'}\n${(p.addrs || []).join('\n')}`),
      s('circle', { cx: x, cy: y, r: 11 }),
      s('text', { class: 'peer-label', x: lx, y: ly + 4, 'text-anchor': anchor }, shortId(p.peer_id))));
    }

    const me = s('g', { class: `ring-self${self ? ownerClass(self) : ''}`, 'data-peer-id': self || '' },
      s('title', {}, self || 'this node'),
      s('circle', { cx: CX, cy: CY, r: 28 }),
      s('text', { class: 'self-label', x: CX, y: CY + 4, 'text-anchor': 'middle' }, 'this node'));
    const guide = s('circle', { class: 'guide', cx: CX, cy: CY, r: R });
    const empty = peers.length ? null
      : s('text', { class: 'axis', x: CX, y: CY + R + 40, 'text-anchor': 'middle' }, 'no peers yet');
    svg.replaceChildren(guide, ...spokes, ...labels, ...dots, me, ...(empty ? [empty] : []));
  }

  async function lookupOwners() {
    const path = $('#owner-path').value.trim();
    const [ns, name] = splitPath(path);
    if (!ns || !name) throw new Error('give the key as ns/name');
    const res = await api(`/api/v1/owners/${encPath(ns, name)}`);
    owners = (res && res.owners) || [];
    const self = node && node.peer_id;
    $('#owners').replaceChildren(...owners.map((id, i) => h('li', { class: `owner${i === 0 ? ' primary' : ''}`, 'data-peer-id': id },
      h('span', { class: 'mono', title: id }, shortId(id)),
      id === self ? h('span', { class: 'badge' }, 'this node') : null,
      i === 0 ? h('span', { class: 'badge primary' }, 'primary') : null)));
    if (!owners.length) $('#owners').append(h('li', { class: 'muted' }, 'no owners'));
    renderRing();
    renderPeersTable();
  }

  const peersPoller = new Poller(pollPeers, 2000);
  tabs.cluster = {
    enter() { renderNodeCards(); peersPoller.start(); },
    leave() { peersPoller.stop(); },
  };

  // -------------------------------------------------------------- objects

  let currentNs = null;
  let objectSeq = 0; // discards answers to a detail request that was superseded
  const PREVIEW_MAX = 64 * 1024;

  async function loadNamespaces() {
    const list = (await api('/api/v1/namespaces')) || [];
    $('#namespaces').replaceChildren(...list.map((ns) => h('a', {
      href: '#', class: `ns${ns === currentNs ? ' active' : ''}`, 'data-ns': ns,
    }, ns)));
    if (!list.length) $('#namespaces').append(h('div', { class: 'muted' }, 'No namespaces.'));
  }

  async function listObjects(ns) {
    currentNs = ns;
    for (const a of $$('#namespaces a.ns')) a.classList.toggle('active', a.dataset.ns === ns);
    const prefix = $('#prefix').value;
    const list = (await api(`/api/v1/objects/${encodeURIComponent(ns)}?prefix=${encodeURIComponent(prefix)}`)) || [];
    renderObjects(list, `${list.length} object${list.length === 1 ? '' : 's'} in ${ns}${prefix ? ` starting with “${prefix}”` : ''}`);
  }

  async function searchObjects() {
    if (!currentNs) throw new Error('pick a namespace to search');
    const q = $('#search-q').value.trim();
    const list = (await api(`/api/v1/search/${encodeURIComponent(currentNs)}?q=${encodeURIComponent(q)}`)) || [];
    renderObjects(list, `${list.length} match${list.length === 1 ? '' : 'es'} for “${q}” in ${currentNs}`);
  }

  // A listing answers Stats; a search answers {path, version, ...} whose other
  // fields may be flat or (like the index's entries) under `summary`.
  function objectRow(o) {
    const sum = o.summary || {};
    const bare = o.name ?? sum.name;
    const path = o.path || (bare !== undefined ? `${currentNs}/${bare}` : '');
    const [, name] = splitPath(path);
    const size = o.size ?? sum.size;
    const type = o.type ?? o.type_tag ?? sum.type ?? sum.type_tag;
    return h('tr', { class: 'object', 'data-path': path, title: path },
      h('td', { class: 'mono' }, name || path),
      h('td', { class: 'num', title: isNum(size) ? `${size} bytes` : '' }, fmtBytes(size)),
      h('td', { class: 'num' }, isNum(o.version) ? String(o.version) : DASH),
      h('td', {}, type || DASH),
      h('td', {}, fmtTime(o.modified_ms)));
  }

  function renderObjects(list, caption) {
    setText('#objects-caption', caption);
    $('#objects tbody').replaceChildren(...list.map(objectRow));
  }

  async function openObject(path) {
    const seq = ++objectSeq;
    const [ns, name] = splitPath(path);
    const st = await api(`/api/v1/stat/${encPath(ns, name)}`);
    if (seq !== objectSeq) return;
    for (const tr of $$('#objects tr.object')) tr.classList.toggle('selected', tr.dataset.path === path);
    renderStat(st, path);
    $('#object-detail').hidden = false;
    await renderPreview(st, ns, name, seq);
  }

  function renderStat(st, path) {
    $('#object-detail').dataset.path = st.path || path;
    setText('#object-path', st.path || path);
    setText('#object-version', String(st.version ?? DASH));
    setText('#object-size', fmtBytes(st.size));
    $('#object-size').title = `${fmtNum(st.size)} bytes`;
    $('#object-size').dataset.bytes = String(st.size ?? '');
    setText('#object-hash', st.hash || DASH);
    setText('#object-type', st.type || st.type_tag || DASH);
    setText('#object-volatile', st.volatile ? 'yes (in memory)' : 'no');
    setText('#object-modified', fmtTime(st.modified_ms));
    setText('#object-ttl', ttlText(st.expires_ms));
    const meta = Object.entries(st.meta || {});
    $('#object-meta').replaceChildren(...meta.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, typeof v === 'string' ? v : JSON.stringify(v))]));
    if (!meta.length) $('#object-meta').append(h('div', { class: 'muted' }, 'none'));
    const replicas = st.replicas || [];
    $('#object-replicas tbody').replaceChildren(...replicas.map((r) => h('tr', { class: 'replica', 'data-peer-id': r.peer },
      h('td', { class: 'mono', title: r.peer }, shortId(r.peer), r.peer === (node && node.peer_id) ? ' (this node)' : ''),
      h('td', { class: 'num' }, r.version ? String(r.version) : 'none'),
      h('td', {}, r.primary ? h('span', { class: 'badge primary' }, 'primary') : ''))));
  }

  function ttlText(expires) {
    if (!isNum(expires)) return 'none';
    const left = expires - Date.now();
    return left > 0 ? `expires in ${fmtMs(left)} (${fmtTime(expires)})` : `expired (${fmtTime(expires)})`;
  }

  // Text only when it is valid UTF-8 with no control characters other than
  // whitespace: anything else would render as garbage.
  function asText(buf) {
    let text;
    try { text = new TextDecoder('utf-8', { fatal: true }).decode(buf); } catch { return null; }
    return /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(text) ? null : text;
  }

  async function renderPreview(st, ns, name, seq) {
    const pre = $('#object-preview');
    pre.classList.remove('binary');
    if (isNum(st.size) && st.size > PREVIEW_MAX) {
      pre.textContent = `not previewed: ${fmtBytes(st.size)} is over 64 KiB`;
      pre.classList.add('binary');
      return;
    }
    pre.textContent = 'loading…';
    const res = await api(`/api/v1/objects/${encPath(ns, name)}`, { raw: true });
    const buf = await res.arrayBuffer();
    if (seq !== objectSeq) return;
    const text = asText(buf);
    if (text === null) {
      pre.textContent = `binary, ${buf.byteLength} bytes`;
      pre.classList.add('binary');
    } else {
      pre.textContent = text;
    }
  }

  async function downloadObject() {
    const path = $('#object-detail').dataset.path;
    if (!path) return;
    const [ns, name] = splitPath(path);
    // A plain link cannot carry the Authorization header, hence the Blob.
    const res = await api(`/api/v1/objects/${encPath(ns, name)}`, { raw: true, timeout: 0 });
    const url = URL.createObjectURL(await res.blob());
    const a = h('a', { href: url, download: name.split('/').pop() || 'object' });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  tabs.objects = {
    enter() { loadNamespaces().catch(showError); },
    leave() {},
  };

  // ----------------------------------------------------------------- jobs

  const JOB_SAMPLES = 120;
  const RATE_WINDOW_MS = 2000;
  let jobs = [];
  let kindsLoaded = false;
  const knownProgress = new Map(); // job id -> last progress seen in its detail
  const dismissed = new Set(); // jobs the user closed: not auto-opened again
  let job = null; // the open detail: { id, status, polls: [{t, busy: Map}], samples: [Map] }

  // A state is a word ("running"); a failure may come as {"failed": reason}.
  function stateOf(state) {
    if (typeof state === 'string') return { word: state, reason: '' };
    if (state && typeof state === 'object') {
      const [k, v] = Object.entries(state)[0] || ['unknown', ''];
      return { word: k, reason: typeof v === 'string' ? v : JSON.stringify(v) };
    }
    return { word: String(state ?? 'unknown'), reason: '' };
  }
  const stateClass = (word) => `state state-${String(word).toLowerCase().split(/\W/)[0]}`;

  const argsText = (args) => Object.entries(args || {}).map(([k, v]) => `${k}=${v}`).join(' ');

  function jobElapsed(r) {
    const start = r.started_ms || r.submitted_ms;
    if (!isNum(start)) return null;
    return (r.finished_ms || Date.now()) - start;
  }

  function progressBar(p, cls = 'progress') {
    const frac = Math.min(Math.max(isNum(p) ? p : 0, 0), 1);
    const bar = h('span', { class: 'bar', style: `width:${(frac * 100).toFixed(1)}%` });
    return h('div', { class: cls, 'data-progress': String(frac) }, bar, h('span', { class: 'text' }, `${Math.floor(frac * 100)} %`));
  }

  async function pollJobs() {
    const list = await api('/api/v1/jobs');
    if (activeTab !== 'jobs') return; // left meanwhile: do not wake the detail poller
    jobs = (Array.isArray(list) ? list : []).sort((a, b) => (b.submitted_ms || 0) - (a.submitted_ms || 0));
    renderJobs();
    if (!job) {
      const running = jobs.find((r) => stateOf(r.state).word === 'running' && !dismissed.has(r.id));
      if (running) openJob(running.id);
    } else {
      // The detail stops polling once its job is final; a change seen here
      // (a cancel from elsewhere) wakes it up.
      const rec = jobs.find((r) => r.id === job.id);
      const shown = job.status && stateOf((job.status.job || {}).state).word;
      if (rec && shown && stateOf(rec.state).word !== shown) jobDetailPoller.start();
    }
  }

  function renderJobs() {
    const rows = jobs.map((r) => {
      const st = stateOf(r.state);
      const p = st.word === 'done' ? 1 : knownProgress.get(r.id);
      return h('tr', { class: `job${job && job.id === r.id ? ' selected' : ''}`, 'data-job-id': r.id },
        h('td', { class: 'mono' }, r.id),
        h('td', {}, r.kind),
        h('td', { class: 'mono small' }, argsText(r.args)),
        h('td', {}, h('span', { class: stateClass(st.word), title: st.reason }, st.word)),
        h('td', {}, isNum(p) ? progressBar(p, 'progress mini') : DASH),
        h('td', { class: 'num' }, fmtMs(jobElapsed(r))));
    });
    $('#jobs tbody').replaceChildren(...rows);
    if (!rows.length) $('#jobs tbody').append(h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No jobs yet.')));
  }

  function openJob(id) {
    if (!job || job.id !== id) {
      job = { id, status: null, polls: [], samples: [], color: palette() };
      setText('#job-title', id);
      setText('#job-state', '…');
      setText('#job-result', '');
      $('#job-chart').replaceChildren();
      $('#job-legend').replaceChildren();
    }
    dismissed.delete(id);
    $('#job-detail').hidden = false;
    for (const tr of $$('#jobs tr.job')) tr.classList.toggle('selected', tr.dataset.jobId === id);
    jobDetailPoller.restart();
  }

  function closeJob() {
    if (job) dismissed.add(job.id);
    job = null;
    jobDetailPoller.stop();
    $('#job-detail').hidden = true;
    for (const tr of $$('#jobs tr.job')) tr.classList.remove('selected');
  }

  async function pollJobDetail() {
    if (!job) return;
    const id = job.id;
    const status = await api(`/api/v1/jobs/${encodeURIComponent(id)}`);
    if (!job || job.id !== id) return; // another job was opened meanwhile
    job.status = status;
    knownProgress.set(id, status.progress);
    sampleWorkers(status);
    renderJobDetail(status);
    // A final job's status no longer changes: one last render is enough.
    if (stateOf((status.job || {}).state).word !== 'running') jobDetailPoller.stop();
  }

  // Turns each worker's cumulative busy_ms into a rate: busy ms per ms of
  // wall time, i.e. how many cores' worth it computed. Measured over about
  // RATE_WINDOW_MS rather than one 500 ms poll because heartbeats (and so
  // busy_ms) advance in steps, which would draw as a saw-tooth.
  function sampleWorkers(status) {
    const t = performance.now();
    const busy = new Map((status.workers || []).map((w) => [w.worker, (w.stats && w.stats.busy_ms) || 0]));
    job.polls.push({ t, busy });
    while (job.polls.length > 2 && t - job.polls[1].t >= RATE_WINDOW_MS) job.polls.shift();
    const base = job.polls[0];
    if (base.t === t) return; // the first poll: nothing to compare with yet
    const rates = new Map();
    for (const [w, ms] of busy) {
      const before = base.busy.has(w) ? base.busy.get(w) : ms;
      rates.set(w, Math.max(0, (ms - before) / (t - base.t)));
    }
    job.samples.push(rates);
    if (job.samples.length > JOB_SAMPLES) job.samples.shift();
  }

  function renderJobDetail(status) {
    const rec = status.job || {};
    const st = stateOf(rec.state);
    const stateEl = $('#job-state');
    stateEl.textContent = st.word;
    stateEl.className = stateClass(st.word);
    setText('#job-title', `${rec.id || job.id} · ${rec.kind || ''} ${argsText(rec.args)}`.trim());
    setText('#job-reason', st.reason);

    const frac = Math.min(Math.max(isNum(status.progress) ? status.progress : 0, 0), 1);
    const bar = $('#job-progress');
    bar.dataset.progress = String(frac);
    bar.setAttribute('aria-valuenow', String(Math.floor(frac * 100)));
    $('.bar', bar).style.width = `${(frac * 100).toFixed(1)}%`;
    $('.text', bar).textContent = `${Math.floor(frac * 100)} %`;

    setText('#job-elapsed', fmtMs(status.elapsed_ms));
    setText('#job-tasks', fmtNum(status.tasks));
    setText('#job-steals', fmtNum(status.steals));
    setText('#job-divides', fmtNum(status.divides));
    setText('#job-restarts', fmtNum(status.restarts));
    $('#job-cancel').hidden = st.word !== 'running';
    setText('#job-result', resultText(rec.result));
    renderJobChart();
  }

  function resultText(result) {
    if (result === null || result === undefined || result === '') return '';
    if (typeof result !== 'string') return JSON.stringify(result, null, 2);
    try { return JSON.stringify(JSON.parse(result), null, 2); } catch { return result; }
  }

  function renderJobChart() {
    const workers = [...new Set(job.samples.flatMap((m) => [...m.keys()]))].sort();
    const series = workers.map((w) => ({
      key: w,
      color: job.color(w),
      values: job.samples.map((m) => (m.has(w) ? m.get(w) : null)),
    }));
    drawLines($('#job-chart'), series, { capacity: JOB_SAMPLES, yFmt: (v) => v.toFixed(1), minMax: 1, span: `${(JOB_SAMPLES * 0.5).toFixed(0)} s ago` });
    const last = job.samples[job.samples.length - 1] || new Map();
    $('#job-legend').replaceChildren(...workers.map((w) => h('span', { class: 'legend-item', 'data-worker': w, title: w },
      h('i', { class: 'swatch', style: `background:${job.color(w)}` }),
      shortId(w), h('span', { class: 'muted' }, ` ${fmtRate(last.get(w))}`))));
  }

  async function cancelJob() {
    if (!job) return;
    await api(`/api/v1/jobs/${encodeURIComponent(job.id)}`, { method: 'DELETE' });
    jobDetailPoller.restart();
    await pollJobs();
  }

  async function loadKinds() {
    const kinds = (await api('/api/v1/kinds')) || [];
    const sel = $('#job-kind');
    sel.replaceChildren(...kinds.map((k) => h('option', { value: k.kind, 'data-about': k.about || '' }, k.kind)));
    kindsLoaded = true;
    showKindHint();
  }

  function showKindHint() {
    const opt = $('#job-kind').selectedOptions[0];
    setText('#job-kind-about', opt ? opt.dataset.about : 'This node runs no job kinds.');
  }

  function parseArgs(text) {
    const args = {};
    for (const pair of text.trim().split(/\s+/).filter(Boolean)) {
      const i = pair.indexOf('=');
      if (i <= 0) throw new Error(`arguments are key=value pairs: “${pair}” is not`);
      args[pair.slice(0, i)] = pair.slice(i + 1);
    }
    return args;
  }

  async function submitJob() {
    const kind = $('#job-kind').value;
    if (!kind) throw new Error('pick a job kind');
    const res = await api('/api/v1/jobs', { method: 'POST', body: { kind, args: parseArgs($('#job-args').value) } });
    if (res && res.id) openJob(res.id);
    await pollJobs();
  }

  const jobsPoller = new Poller(pollJobs, 1000);
  const jobDetailPoller = new Poller(pollJobDetail, 500);
  tabs.jobs = {
    enter() {
      if (!kindsLoaded) loadKinds().catch(showError);
      jobsPoller.start();
      if (job) jobDetailPoller.start();
    },
    leave() { jobsPoller.stop(); jobDetailPoller.stop(); },
  };

  // -------------------------------------------------------------- metrics

  const METRIC_SAMPLES = 60;

  // Prometheus text format: `name{l="v",...} value [timestamp]`; label values
  // may hold escaped quotes, commas and braces, hence a small scanner.
  function parseProm(text) {
    const samples = [];
    const types = new Map();
    for (const raw of text.split('\n')) {
      const line = raw.trim();
      if (!line) continue;
      if (line.startsWith('#')) {
        const m = /^#\s*TYPE\s+(\S+)\s+(\S+)/.exec(line);
        if (m) types.set(m[1], m[2]);
        continue;
      }
      const sample = parseSampleLine(line);
      if (sample) samples.push(sample);
    }
    return { samples, types };
  }

  function parseSampleLine(line) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(line);
    if (!m) return null;
    const name = m[1];
    let i = name.length;
    const labels = {};
    if (line[i] === '{') {
      i++;
      while (i < line.length && line[i] !== '}') {
        const lm = /^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"/.exec(line.slice(i));
        if (!lm) return null;
        i += lm[0].length;
        let v = '';
        while (i < line.length && line[i] !== '"') {
          if (line[i] === '\\' && i + 1 < line.length) {
            const c = line[++i];
            v += c === 'n' ? '\n' : c;
          } else v += line[i];
          i++;
        }
        labels[lm[1]] = v;
        i++; // closing quote
        while (line[i] === ',' || line[i] === ' ') i++;
      }
      i++; // closing brace
    }
    const word = line.slice(i).trim().split(/\s+/)[0];
    const special = { '+Inf': Infinity, Inf: Infinity, '-Inf': -Infinity, NaN };
    const value = word in special ? special[word] : Number(word);
    return word === '' || (Number.isNaN(value) && word !== 'NaN') ? null : { name, labels, value };
  }

  const sumOf = (samples, name, filter = () => true) => {
    const xs = samples.filter((x) => x.name === name && filter(x.labels));
    return xs.length ? xs.reduce((a, x) => a + x.value, 0) : null;
  };

  // What the cards show. `rate` series are counters turned into per-second
  // rates between scrapes; the others are gauges shown as they are.
  const CARDS = [
    { id: 'ops', title: 'operations / s', rate: true, fmt: fmtRate, series: (ss) => [['all', sumOf(ss, 'p3_operations_total')]] },
    {
      id: 'ops-by-op', title: 'operations / s by op', rate: true, fmt: fmtRate, multi: true,
      series: (ss) => {
        const ops = [...new Set(ss.filter((x) => x.name === 'p3_operations_total').map((x) => x.labels.op ?? ''))].sort();
        return ops.map((op) => [op || '(none)', sumOf(ss, 'p3_operations_total', (l) => (l.op ?? '') === op)]);
      },
    },
    {
      id: 'bytes', title: 'bytes in / out per s', rate: true, fmt: (v) => `${fmtBytes(v)}/s`, multi: true,
      series: (ss) => [['in', sumOf(ss, 'p3_bytes_in_total')], ['out', sumOf(ss, 'p3_bytes_out_total')]],
    },
    { id: 'peers', title: 'connected peers', fmt: fmtNum, series: (ss) => [['peers', sumOf(ss, 'p3_peers_connected')]] },
    { id: 'routing', title: 'routing table size', fmt: fmtNum, series: (ss) => [['routing', sumOf(ss, 'p3_routing_table_size')]] },
    { id: 'locks', title: 'locks held', fmt: fmtNum, series: (ss) => [['locks', sumOf(ss, 'p3_locks_held')]] },
    { id: 'store', title: 'store size', fmt: fmtBytes, series: (ss) => [['store', sumOf(ss, 'p3_store_bytes')]] },
  ];

  const metricHistory = new Map(); // card id -> Map(series key -> [values])
  const metricColor = new Map(CARDS.map((c) => [c.id, palette()]));
  let prevScrape = null; // { t, values: Map('card/key' -> number) } for rates

  function buildMetricCards() {
    $('#metric-cards').replaceChildren(...CARDS.map((c) => h('div', { class: `card metric${c.multi ? ' multi' : ''}`, id: `metric-${c.id}` },
      h('div', { class: 'label' }, c.title),
      h('div', { class: 'metric-value big' }, DASH),
      s('svg', { class: 'spark' }),
      h('div', { class: 'legend small' }))));
  }

  async function pollMetrics() {
    const res = await api('/metrics', { raw: true });
    const { samples, types } = parseProm(await res.text());
    const t = performance.now();
    const values = new Map();
    for (const card of CARDS) {
      const hist = metricHistory.get(card.id) || new Map();
      metricHistory.set(card.id, hist);
      for (const [key, v] of card.series(samples)) {
        values.set(`${card.id}/${key}`, v);
        let shown = v;
        if (card.rate) {
          const before = prevScrape && prevScrape.values.get(`${card.id}/${key}`);
          // No rate on the first scrape, and none across a counter reset.
          shown = isNum(v) && isNum(before) && v >= before ? (v - before) / ((t - prevScrape.t) / 1000) : null;
        }
        const arr = hist.get(key) || [];
        arr.push(shown);
        if (arr.length > METRIC_SAMPLES) arr.shift();
        hist.set(key, arr);
      }
    }
    prevScrape = { t, values };
    renderMetricCards();
    renderRawMetrics(samples, types);
  }

  function renderMetricCards() {
    for (const card of CARDS) {
      const box = $(`#metric-${card.id}`);
      const hist = metricHistory.get(card.id) || new Map();
      const series = [...hist].map(([key, values]) => ({ key, values, color: metricColor.get(card.id)(key) }));
      const current = (key) => { const a = hist.get(key) || []; return a[a.length - 1]; };
      $('.metric-value', box).textContent = bigText(card, series.map((x) => current(x.key)));
      drawLines($('svg.spark', box), series, { capacity: METRIC_SAMPLES, axes: false, fill: !card.multi, minMax: card.minMax });
      $('.legend', box).replaceChildren(...(card.multi ? series.map((x) => h('span', { class: 'legend-item', 'data-key': x.key },
        h('i', { class: 'swatch', style: `background:${x.color}` }), `${x.key} ${card.fmt(current(x.key))}`)) : []));
    }
  }

  // The big number: the one value, the in/out pair, or the sum of a card's lines.
  function bigText(card, currents) {
    if (!currents.some(isNum)) return DASH;
    if (card.id === 'bytes') return `↓ ${card.fmt(currents[0])} · ↑ ${card.fmt(currents[1])}`;
    return card.fmt(currents.filter(isNum).reduce((a, v) => a + v, 0));
  }

  function renderRawMetrics(samples, types) {
    const families = new Map();
    const familyOf = (name) => {
      if (types.has(name)) return name;
      const base = name.replace(/_(bucket|sum|count)$/, '');
      return types.has(base) ? base : name;
    };
    for (const x of samples) {
      const f = familyOf(x.name);
      if (!families.has(f)) families.set(f, []);
      families.get(f).push(x);
    }
    const labelText = (x) => {
      const ls = Object.entries(x.labels).map(([k, v]) => `${k}="${v}"`).join(', ');
      const suffix = x.name.length > 0 ? x.name.slice(familyOf(x.name).length) : '';
      return `${suffix}${ls ? `{${ls}}` : ''}`;
    };
    const blocks = [...families].sort(([a], [b]) => a.localeCompare(b)).map(([name, xs]) => h('div', { class: 'family', 'data-family': name },
      h('div', { class: 'family-name' }, h('span', { class: 'mono' }, name), types.has(name) ? h('span', { class: 'badge' }, types.get(name)) : null),
      h('ul', {}, xs.map((x) => h('li', {}, h('span', { class: 'mono muted' }, labelText(x) || 'value'), h('span', { class: 'mono num' }, fmtNum(x.value, 3)))))));
    $('#metrics-raw').replaceChildren(...blocks);
    if (!blocks.length) $('#metrics-raw').append(h('div', { class: 'muted' }, 'No metrics yet.'));
  }

  const metricsPoller = new Poller(pollMetrics, 2000);
  tabs.metrics = {
    // A rate across the time the tab was hidden would be an average unlike
    // its neighbours: start counting afresh.
    enter() { prevScrape = null; metricsPoller.start(); },
    leave() { metricsPoller.stop(); },
  };

  // ------------------------------------------------------------ token form

  const nodePoller = new Poller(pollNode, 2000);
  let started = false;

  function showTokenForm() {
    $('#token-form').hidden = false;
    $('#token-input').focus();
  }

  function start() {
    $('#token-form').hidden = true;
    if (started) { nodePoller.restart(); showTab(activeTab); return; }
    started = true;
    nodePoller.start();
    showTab(activeTab);
  }

  // ---------------------------------------------------------------- wiring

  function onEnter(sel, fn) {
    $(sel).addEventListener('keydown', (e) => { if (e.key === 'Enter') { e.preventDefault(); fn(); } });
  }

  function wire() {
    for (const a of $$('a[data-tab]')) {
      a.addEventListener('click', (e) => { e.preventDefault(); showTab(a.dataset.tab); });
    }
    $('#error-close').addEventListener('click', hideError);

    $('#token-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const t = $('#token-input').value.trim();
      if (!t) return;
      token = t;
      sessionStorage.setItem(TOKEN_KEY, t);
      hideError();
      start();
    });

    const lookup = guard(lookupOwners);
    $('#owner-go').addEventListener('click', lookup);
    onEnter('#owner-path', lookup);

    $('#namespaces').addEventListener('click', guard(async (e) => {
      const a = e.target.closest('a.ns');
      if (!a) return;
      e.preventDefault();
      await listObjects(a.dataset.ns);
    }));
    const relist = guard(async () => { if (currentNs) await listObjects(currentNs); else throw new Error('pick a namespace'); });
    $('#prefix-go').addEventListener('click', relist);
    onEnter('#prefix', relist);
    const search = guard(searchObjects);
    $('#search-go').addEventListener('click', search);
    onEnter('#search-q', search);
    $('#objects').addEventListener('click', guard(async (e) => {
      const tr = e.target.closest('tr.object');
      if (tr && tr.dataset.path) await openObject(tr.dataset.path);
    }));
    $('#object-close').addEventListener('click', () => { objectSeq++; $('#object-detail').hidden = true; });
    $('#object-download').addEventListener('click', guard(downloadObject));

    $('#jobs').addEventListener('click', (e) => {
      const tr = e.target.closest('tr.job');
      if (tr) openJob(tr.dataset.jobId);
    });
    $('#job-close').addEventListener('click', closeJob);
    $('#job-cancel').addEventListener('click', guard(cancelJob));
    $('#job-kind').addEventListener('change', showKindHint);
    $('#job-form').addEventListener('submit', (e) => { e.preventDefault(); guard(submitJob)(); });

    // A last net: nothing should get here, but if it does the user sees it.
    window.addEventListener('unhandledrejection', (e) => { showError(e.reason); e.preventDefault(); });
  }

  function init() {
    buildMetricCards();
    wire();
    token = readToken();
    if (token) start();
    else showTokenForm();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
