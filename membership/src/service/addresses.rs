//! Keeps the network layer's address book equal to the map: every member's
//! announced addresses, so this node can dial any owner the map names even
//! when Kademlia's table has no room for it.

use std::collections::HashMap;

use p3_dht::{Multiaddr, PeerId};

use super::Membership;

impl Membership {
    /// Hands the members' addresses to the network layer whenever the
    /// map's members or their addresses change. Ends with the node.
    pub(super) async fn share_addresses(self) {
        let mut maps = self.inner.map.clone();
        let mut last: Option<HashMap<PeerId, Vec<Multiaddr>>> = None;
        loop {
            let members: HashMap<PeerId, Vec<Multiaddr>> = maps
                .borrow_and_update()
                .members()
                .filter(|(peer, _)| **peer != self.inner.me)
                .map(|(peer, m)| {
                    (
                        *peer,
                        m.addrs.iter().filter_map(|a| a.parse().ok()).collect(),
                    )
                })
                .collect();
            if last.as_ref() != Some(&members) {
                if self
                    .inner
                    .node
                    .set_member_addresses(members.clone())
                    .await
                    .is_err()
                {
                    return;
                }
                last = Some(members);
            }
            if maps.changed().await.is_err() {
                return;
            }
        }
    }
}
