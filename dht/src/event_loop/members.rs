//! Kademlia's routing table following the membership map. The map names
//! every member with its addresses, so a node can fill its table from it
//! instead of discovering the network with lookups: libp2p-kad bootstraps
//! (a lookup of the node itself, then one per bucket, each until the k
//! closest peers answer) whenever a peer enters a table of fewer than k
//! entries, and again every refresh period. At N = 200 that was about two
//! bootstraps and 122 new connections per join (`docs/scale.md`), the
//! dominant cost of a join; once the table follows the map it buys nothing.
//!
//! Only once this node's own join is in its map: a node restarting loads
//! the map of its previous run, whose members may since have restarted on
//! new addresses, and until a live leader has answered it the bootstrap
//! through the seeds is what finds them.

use libp2p::kad::QueryInfo;

use super::EventLoop;
use crate::MemberChanges;

impl EventLoop {
    /// Takes the map's latest changes: the address book offers the members'
    /// addresses to dials, and the routing table gains the members whose
    /// entries are current (each bucket keeps at most k; the rest are
    /// dropped, as Kademlia would) and loses those that left the map. Once
    /// this node is a member itself, the table follows the map.
    pub(super) fn follow_members(&mut self, changes: MemberChanges) {
        self.swarm.behaviour_mut().address_book.apply(&changes);
        let kad = &mut self.swarm.behaviour_mut().kad;
        for peer in &changes.removed {
            kad.remove_peer(peer);
        }
        for member in changes.added.into_iter().filter(|m| m.current) {
            for addr in member.addrs {
                kad.add_address(&member.peer, addr);
            }
        }
        self.table_follows_map |= changes.joined;
    }

    /// Ends any bootstrap Kademlia has started on its own, once the table
    /// follows the map. Finishing one step makes the next begin (one per
    /// bucket), so this runs after every swarm event: each step is cut
    /// before it sends more than its first few requests.
    pub(super) fn cut_bootstrap(&mut self) {
        if !self.table_follows_map {
            return;
        }
        for mut query in self.swarm.behaviour_mut().kad.iter_queries_mut() {
            if matches!(query.info(), QueryInfo::Bootstrap { .. }) {
                query.finish();
            }
        }
    }
}
