//! Keeps the network layer's address book, and through it Kademlia's routing
//! table, equal to the map: every member's announced addresses, so this node
//! can dial any owner the map names even when Kademlia's table has no room
//! for it.

use std::collections::HashMap;

use p3_dht::{MemberAddrs, MemberChanges, Multiaddr, PeerId};

use super::Membership;
use crate::map::{Map, Member};

impl Membership {
    /// Hands the network layer the changes of the map's members and their
    /// addresses whenever there are some. Ends with the node.
    pub(super) async fn share_addresses(self) {
        let mut maps = self.inner.map.clone();
        let mut told = Told::new(&maps.borrow(), self.inner.me, self.inner.incarnation);
        loop {
            let changes = told.changes(&maps.borrow_and_update());
            if let Some(changes) = changes {
                if self.inner.node.update_members(changes).await.is_err() {
                    return;
                }
            }
            if maps.changed().await.is_err() {
                return;
            }
        }
    }
}

/// A member's entry as the network layer was last told it.
type Entry = (u64, Vec<String>);

/// What the network layer has been told of the map. Each map change reaches
/// every node, so only the members the map says were touched since the last
/// look are compared and sent: walking all N on every change made a join
/// cost O(N) per node, at the top of the profiles at N = 750 and 1,000
/// (`docs/scale.md`).
struct Told {
    me: PeerId,
    incarnation: u64,
    /// Entries of the map loaded from disk at start that have not changed
    /// since: they may name a previous run's addresses.
    loaded: HashMap<PeerId, Entry>,
    /// Every member's entry as last sent.
    known: HashMap<PeerId, Entry>,
    /// The epoch of the map last looked at; `None` before the first look.
    seen: Option<u64>,
    /// Whether this node's own join has been seen (and sent).
    joined: bool,
}

fn entry(member: &Member) -> Entry {
    (member.incarnation, member.addrs.clone())
}

fn same(entry: &Entry, member: &Member) -> bool {
    entry.0 == member.incarnation && entry.1 == member.addrs
}

impl Told {
    /// Starts from `loaded`, the map this node read from disk.
    fn new(loaded: &Map, me: PeerId, incarnation: u64) -> Self {
        Told {
            me,
            incarnation,
            loaded: loaded.members().map(|(p, m)| (*p, entry(m))).collect(),
            known: HashMap::new(),
            seen: None,
            joined: false,
        }
    }

    /// What changed in `map` since the last call, if anything: members
    /// (other than this node) that are new, moved or restarted, each marked
    /// current unless its entry is still the one loaded from disk, those
    /// that left, and whether this node has joined as its current run.
    /// Addresses that do not parse are left out.
    fn changes(&mut self, map: &Map) -> Option<MemberChanges> {
        let touched: Vec<PeerId> = match self.seen.and_then(|seen| map.touched_since(seen)) {
            Some(touched) => touched.copied().collect(),
            // The first look, or the map was read whole: compare everyone,
            // and everyone told before.
            None => self
                .known
                .keys()
                .chain(map.members().map(|(p, _)| p))
                .copied()
                .collect(),
        };
        self.seen = Some(map.epoch());
        let mut added = Vec::new();
        let mut removed = Vec::new();
        for peer in touched {
            if peer == self.me {
                continue;
            }
            let Some(member) = map.member(&peer) else {
                if self.known.remove(&peer).is_some() {
                    self.loaded.remove(&peer);
                    removed.push(peer);
                }
                continue;
            };
            if self
                .known
                .get(&peer)
                .is_some_and(|known| same(known, member))
            {
                continue;
            }
            self.known.insert(peer, entry(member));
            // An incarnation is random: an entry that changed never returns
            // to the one loaded.
            let current = !self.loaded.get(&peer).is_some_and(|l| same(l, member));
            if current {
                self.loaded.remove(&peer);
            }
            added.push(MemberAddrs {
                peer,
                addrs: member
                    .addrs
                    .iter()
                    .filter_map(|a| a.parse::<Multiaddr>().ok())
                    .collect(),
                current,
            });
        }
        let joined = map.holds(&self.me, self.incarnation);
        let newly_joined = joined && !self.joined;
        self.joined |= joined;
        (newly_joined || !added.is_empty() || !removed.is_empty()).then_some(MemberChanges {
            added,
            removed,
            joined: self.joined,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::Change;

    fn addr(text: &str) -> Multiaddr {
        text.parse().unwrap()
    }

    fn join(map: &mut Map, peer: PeerId, addr: &str, incarnation: u64) {
        map.apply(&Change::Join {
            peer: peer.to_string(),
            addrs: vec![addr.to_owned()],
            incarnation,
        });
    }

    /// `(peer, addresses, current)` of each member added, in peer order.
    fn added(changes: &MemberChanges) -> Vec<(PeerId, Vec<Multiaddr>, bool)> {
        let mut added: Vec<_> = changes
            .added
            .iter()
            .map(|m| (m.peer, m.addrs.clone(), m.current))
            .collect();
        added.sort_by_key(|(peer, _, _)| *peer);
        added
    }

    fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
        items.sort();
        items
    }

    #[test]
    fn only_new_moved_and_departed_members_are_reported() {
        let (me, a, b) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut map = Map::default();
        let mut told = Told::new(&map, me, 1);
        join(&mut map, me, "/memory/1", 1);
        join(&mut map, a, "/memory/2", 1);

        let first = told.changes(&map).expect("a is new");
        assert_eq!(
            added(&first),
            vec![(a, vec![addr("/memory/2")], true)],
            "not me"
        );
        assert!(first.removed.is_empty());
        assert!(first.joined);
        assert_eq!(told.changes(&map), None, "nothing new");

        join(&mut map, b, "not an address", 1);
        join(&mut map, a, "/memory/3", 1);
        let second = told.changes(&map).expect("a moved, b is new");
        let expected = sorted(vec![(a, vec![addr("/memory/3")], true), (b, vec![], true)]);
        assert_eq!(added(&second), expected, "b's bad address left out");

        map.apply(&Change::Remove {
            peer: a.to_string(),
            incarnation: 1,
        });
        let third = told.changes(&map).expect("a left");
        assert_eq!(third.removed, vec![a]);
        assert!(third.added.is_empty());
        assert!(third.joined, "joined stays true");
    }

    /// After a restart the map read from disk names the members' previous
    /// addresses: they are offered to dials but not marked current, so the
    /// routing table does not take them, until each member's entry changes.
    /// Joined is reported once this node's new incarnation is in the map.
    #[test]
    fn entries_loaded_from_disk_are_current_only_once_rewritten() {
        let (me, a, b) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut map = Map::default();
        join(&mut map, me, "/memory/1", 1);
        join(&mut map, a, "/memory/2", 1);
        join(&mut map, b, "/memory/3", 1);
        let mut told = Told::new(&map, me, 2);

        let first = told.changes(&map).expect("the loaded members");
        let expected = sorted(vec![
            (a, vec![addr("/memory/2")], false),
            (b, vec![addr("/memory/3")], false),
        ]);
        assert_eq!(added(&first), expected);
        assert!(!first.joined, "the map names my previous run");

        join(&mut map, a, "/memory/4", 2);
        let second = told.changes(&map).expect("a restarted");
        assert_eq!(added(&second), vec![(a, vec![addr("/memory/4")], true)]);
        assert!(!second.joined);

        join(&mut map, me, "/memory/5", 2);
        let third = told.changes(&map).expect("I joined");
        assert!(third.added.is_empty() && third.removed.is_empty());
        assert!(third.joined);
        assert_eq!(told.changes(&map), None);

        join(&mut map, b, "/memory/3", 2);
        let fourth = told.changes(&map).expect("b restarted on the same address");
        assert_eq!(added(&fourth), vec![(b, vec![addr("/memory/3")], true)]);
    }

    /// A map that arrives whole (a snapshot) does not say what changed:
    /// every member is compared, and one that is gone is reported removed.
    #[test]
    fn a_map_read_whole_is_compared_member_by_member() {
        let (me, a, b) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut map = Map::default();
        join(&mut map, me, "/memory/1", 1);
        join(&mut map, a, "/memory/2", 1);
        let mut told = Told::new(&Map::default(), me, 1);
        told.changes(&map).expect("a is new");

        join(&mut map, b, "/memory/3", 1);
        map.apply(&Change::Remove {
            peer: a.to_string(),
            incarnation: 1,
        });
        let mut bytes = Vec::new();
        ciborium::into_writer(&map, &mut bytes).unwrap();
        let whole: Map = ciborium::from_reader(bytes.as_slice()).unwrap();
        let changes = told.changes(&whole).expect("b joined, a left");
        assert_eq!(added(&changes), vec![(b, vec![addr("/memory/3")], true)]);
        assert_eq!(changes.removed, vec![a]);
        assert_eq!(told.changes(&whole), None);
    }
}
