// This node's status: the header (short id, role) and the cluster tab's
// cards (id, addresses, uptime, peers, routing table, volatile bytes).

import { $, setText } from './dom.js';
import { DASH, fmtBytes, fmtNum, fmtSecs, shortId } from './format.js';
import { api } from './api.js';

let node = null;

// The peer id of the node serving the page, once its status came.
export const selfId = () => node && node.peer_id;

export async function pollNode() {
  node = await api('/api/v1/node');
  setText('#node-short', shortId(node.peer_id));
  $('#node-short').title = node.peer_id || '';
  // The spec's node status has no role; show one if the server adds it.
  setText('#node-role', node.role || 'node');
  renderNodeCards();
}

export function renderNodeCards() {
  if (!node) return;
  setText('#node-id', node.peer_id || DASH);
  setText('#node-addrs', (node.listen_addrs || []).join('  '));
  setText('#node-uptime', fmtSecs(node.uptime_secs));
  setText('#node-connected', fmtNum(node.connected_peers));
  setText('#node-routing', fmtNum(node.routing_table_size));
  setText('#node-volatile', fmtBytes(node.volatile_bytes));
}
