//! Keeps the network layer's address book, and through it Kademlia's routing
//! table, equal to the map: every member's announced addresses, so this node
//! can dial any owner the map names even when Kademlia's table has no room
//! for it.

use std::collections::HashMap;

use p3_dht::{MemberChanges, Multiaddr, PeerId};

use super::Membership;
use crate::map::Map;

impl Membership {
    /// Hands the network layer the changes of the map's members and their
    /// addresses whenever there are some. Ends with the node.
    pub(super) async fn share_addresses(self) {
        let mut maps = self.inner.map.clone();
        let mut known = HashMap::new();
        loop {
            let changes = changes(&mut known, &maps.borrow_and_update(), &self.inner.me);
            if !changes.is_empty() && self.inner.node.update_members(changes).await.is_err() {
                return;
            }
            if maps.changed().await.is_err() {
                return;
            }
        }
    }
}

/// What changed in `map`'s members (other than `me`) since `known`, which
/// it then brings up to date. Each map change reaches every node, so only
/// the members whose addresses differ are parsed: parsing all N on every
/// change made a join cost O(N) per node, the top of the profile at
/// N = 750 (`docs/scale.md`). Addresses that do not parse are left out.
fn changes(known: &mut HashMap<PeerId, Vec<String>>, map: &Map, me: &PeerId) -> MemberChanges {
    let removed: Vec<PeerId> = known
        .keys()
        .filter(|peer| map.member(peer).is_none())
        .copied()
        .collect();
    for peer in &removed {
        known.remove(peer);
    }
    let mut added = Vec::new();
    for (peer, member) in map.members().filter(|(peer, _)| *peer != me) {
        if known.get(peer) != Some(&member.addrs) {
            known.insert(*peer, member.addrs.clone());
            let addrs: Vec<Multiaddr> =
                member.addrs.iter().filter_map(|a| a.parse().ok()).collect();
            added.push((*peer, addrs));
        }
    }
    MemberChanges { added, removed }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::Change;

    fn addr(text: &str) -> Multiaddr {
        text.parse().unwrap()
    }

    fn join(map: &mut Map, peer: PeerId, addr: &str) {
        map.apply(&Change::Join {
            peer: peer.to_string(),
            addrs: vec![addr.to_owned()],
            incarnation: 1,
        });
    }

    #[test]
    fn only_new_moved_and_departed_members_are_reported() {
        let (me, a, b) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut map = Map::default();
        join(&mut map, me, "/memory/1");
        join(&mut map, a, "/memory/2");
        let mut known = HashMap::new();

        let first = changes(&mut known, &map, &me);
        assert_eq!(first.added, vec![(a, vec![addr("/memory/2")])], "not me");
        assert!(first.removed.is_empty());
        assert!(changes(&mut known, &map, &me).is_empty(), "nothing new");

        join(&mut map, b, "not an address");
        join(&mut map, a, "/memory/3");
        let second = changes(&mut known, &map, &me);
        let mut added = second.added.clone();
        added.sort_by_key(|(peer, _)| *peer);
        let mut expected = vec![(a, vec![addr("/memory/3")]), (b, vec![])];
        expected.sort_by_key(|(peer, _)| *peer);
        assert_eq!(
            added, expected,
            "a moved, b is new (its bad address left out)"
        );

        map.apply(&Change::Remove {
            peer: a.to_string(),
            incarnation: 1,
        });
        let third = changes(&mut known, &map, &me);
        assert_eq!(third.removed, vec![a]);
        assert!(third.added.is_empty());
    }
}
