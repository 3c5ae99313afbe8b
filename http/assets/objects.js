// The Objects tab: namespaces, listing and search, and one object's stat,
// replicas, preview and download.

import { $, $$, h, setText, onEnter } from './dom.js';
import { DASH, isNum, fmtBytes, fmtMs, fmtNum, fmtTime, shortId } from './format.js';
import { api, encPath, splitPath } from './api.js';
import { showError, guard } from './banner.js';
import { selfId } from './node-status.js';

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
    h('td', { class: 'mono', title: r.peer }, shortId(r.peer), r.peer === selfId() ? ' (this node)' : ''),
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

export function wire() {
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
}

export const tab = {
  enter() { loadNamespaces().catch(showError); },
  leave() {},
};
