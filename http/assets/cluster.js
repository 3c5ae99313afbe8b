// The Cluster tab: the peers table, the ring of peers around this node and
// the owners of a key.

import { $, h, s, onEnter } from './dom.js';
import { DASH, isNum, fmtMs, shortId } from './format.js';
import { api, encPath, splitPath } from './api.js';
import { guard } from './banner.js';
import { Poller } from './poll.js';
import { renderNodeCards, selfId } from './node-status.js';

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
  const self = selfId();
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
  const self = selfId();
  $('#owners').replaceChildren(...owners.map((id, i) => h('li', { class: `owner${i === 0 ? ' primary' : ''}`, 'data-peer-id': id },
    h('span', { class: 'mono', title: id }, shortId(id)),
    id === self ? h('span', { class: 'badge' }, 'this node') : null,
    i === 0 ? h('span', { class: 'badge primary' }, 'primary') : null)));
  if (!owners.length) $('#owners').append(h('li', { class: 'muted' }, 'no owners'));
  renderRing();
  renderPeersTable();
}

export function wire() {
  const lookup = guard(lookupOwners);
  $('#owner-go').addEventListener('click', lookup);
  onEnter('#owner-path', lookup);
}

const peersPoller = new Poller(pollPeers, 2000);
export const tab = {
  enter() { renderNodeCards(); peersPoller.start(); },
  leave() { peersPoller.stop(); },
};
