//! The membership map: which nodes are members, at which epoch. It is the
//! state Raft replicates; every change to it is one log entry and one epoch.
//! Pure data, no I/O.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use p3_dht::PeerId;
use serde::{Deserialize, Serialize};

/// One member of the map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Addresses it announced when it joined (multiaddrs, as text).
    pub addrs: Vec<String>,
    /// Random number chosen at each start of the member's process: a member
    /// that restarted is a new incarnation, so its volatile state is gone and
    /// the keys it owns must be peered again.
    pub incarnation: u64,
    /// Epoch at which this incarnation joined: the longest-lived members have
    /// the lowest, and are preferred as voters.
    pub joined: u64,
}

/// A change to the map, as committed through Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A node (re)joins. A new incarnation of a member replaces the old one.
    Join {
        /// The node's peer id, as text.
        peer: String,
        /// Its addresses.
        addrs: Vec<String>,
        /// Its incarnation.
        incarnation: u64,
    },
    /// A member whose lease ran out leaves; only the named incarnation, so a
    /// removal decided before the node came back cannot remove its return.
    Remove {
        /// The member's peer id, as text.
        peer: String,
        /// The incarnation that was found dead.
        incarnation: u64,
    },
}

/// The agreed map of members. Owners of keys are computed from it
/// ([`crate::placement`]), so every node holding the same epoch computes the
/// same owners.
///
/// Every node clones the map once per change it applies (to publish it), so
/// a clone must not copy what the change left alone: members and earlier
/// member sets are shared (`Arc`), and a clone costs pointers, not the N
/// members' addresses and 16 × N peer ids it copied before (the `memmove` at
/// the top of the profile at N = 1,000, `docs/scale.md`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(try_from = "MapWire", into = "MapWire")]
pub struct Map {
    epoch: u64,
    members: BTreeMap<PeerId, Arc<Member>>,
    /// The epoch at which the current set of members began.
    since: u64,
    /// The earlier sets of members, newest first, each with the epoch at
    /// which it began; at most [`PAST`]. Part of the agreed state, so every
    /// node (a newcomer too) knows where a key lived before: peering needs it.
    past: VecDeque<Past>,
    /// The members touched by the latest changes, one per epoch, oldest
    /// first; at most [`RECENT`]. Not agreed state (not
    /// sent, not compared): it lets a reader of successive maps find what
    /// changed without comparing all N members ([`Map::touched_since`]).
    recent: VecDeque<PeerId>,
}

/// Two maps are equal when their agreed state is: [`Map::touched_since`]'s
/// record depends on how a map was reached (changes or a whole copy).
impl PartialEq for Map {
    fn eq(&self, other: &Self) -> bool {
        self.epoch == other.epoch
            && self.members == other.members
            && self.since == other.since
            && self.past == other.past
    }
}

impl Eq for Map {}

/// An earlier set of members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Past {
    /// The epoch at which this set began.
    pub since: u64,
    /// Its members, in peer-id order; shared by every clone of the map.
    pub members: Arc<[PeerId]>,
}

/// How many earlier member sets a map remembers.
pub const PAST: usize = 16;

/// How many changes a map remembers the touched member of: more than a
/// watcher falls behind between two looks while nodes join one by one.
pub const RECENT: usize = 256;

/// The map as it goes on the wire and to disk: peer ids as text.
#[derive(Serialize, Deserialize)]
struct MapWire {
    epoch: u64,
    members: BTreeMap<String, Member>,
    #[serde(default)]
    since: u64,
    #[serde(default)]
    past: Vec<(u64, Vec<String>)>,
}

fn parse_peer(peer: &str) -> Result<PeerId, String> {
    peer.parse::<PeerId>()
        .map_err(|e| format!("bad peer id {peer:?} in the map: {e}"))
}

impl From<Map> for MapWire {
    fn from(map: Map) -> Self {
        MapWire {
            epoch: map.epoch,
            members: map
                .members
                .into_iter()
                .map(|(peer, member)| (peer.to_string(), Arc::unwrap_or_clone(member)))
                .collect(),
            since: map.since,
            past: map
                .past
                .into_iter()
                .map(|p| (p.since, p.members.iter().map(ToString::to_string).collect()))
                .collect(),
        }
    }
}

impl TryFrom<MapWire> for Map {
    type Error = String;

    fn try_from(wire: MapWire) -> Result<Self, String> {
        let members = wire
            .members
            .into_iter()
            .map(|(peer, member)| Ok((parse_peer(&peer)?, Arc::new(member))))
            .collect::<Result<_, String>>()?;
        let past = wire
            .past
            .into_iter()
            .take(PAST)
            .map(|(since, members)| {
                let members = members
                    .iter()
                    .map(|p| parse_peer(p))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Past {
                    since,
                    members: members.into(),
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Map {
            epoch: wire.epoch,
            members,
            since: wire.since,
            past,
            recent: VecDeque::new(),
        })
    }
}

impl Map {
    /// The epoch: how many changes made this map.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The members, in peer-id order.
    pub fn members(&self) -> impl Iterator<Item = (&PeerId, &Member)> {
        self.members.iter().map(|(peer, member)| (peer, &**member))
    }

    /// The member `peer`, if it is one.
    pub fn member(&self, peer: &PeerId) -> Option<&Member> {
        self.members.get(peer).map(|member| &**member)
    }

    /// Whether `peer`'s run `incarnation` is a member: a node has joined
    /// (and its lease may be renewed) only as the run the map names.
    pub fn holds(&self, peer: &PeerId, incarnation: u64) -> bool {
        self.member(peer)
            .is_some_and(|member| member.incarnation == incarnation)
    }

    /// The peers whose entries the changes after `epoch` touched (joined,
    /// moved, restarted or left), oldest first and possibly repeated; `None`
    /// when this map does not remember all of them (it was read whole, or
    /// `epoch` is too far back): then compare every member.
    pub fn touched_since(&self, epoch: u64) -> Option<impl Iterator<Item = &PeerId>> {
        if epoch > self.epoch {
            return None;
        }
        let wanted = (self.epoch - epoch) as usize;
        if wanted > self.recent.len() {
            return None;
        }
        let skip = self.recent.len() - wanted;
        Some(self.recent.iter().skip(skip))
    }

    /// The epoch at which the current set of members began.
    pub fn since(&self) -> u64 {
        self.since
    }

    /// The earlier sets of members, newest first (at most [`PAST`]).
    pub fn past(&self) -> impl Iterator<Item = &Past> {
        self.past.iter()
    }

    /// How many members there are.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether nobody is a member (before the first node joined).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Applies `change`; returns whether it changed the map (then the epoch
    /// went up by one). A change whose peer id does not parse changes nothing:
    /// entries come from peers and must never stop the state machine.
    pub fn apply(&mut self, change: &Change) -> bool {
        let (peer, entry) = match change {
            Change::Join {
                peer,
                addrs,
                incarnation,
            } => {
                let Ok(peer) = peer.parse::<PeerId>() else {
                    return false;
                };
                let joined = match self.members.get(&peer) {
                    Some(m) if m.incarnation == *incarnation && m.addrs == *addrs => return false,
                    Some(m) if m.incarnation == *incarnation => m.joined,
                    _ => self.epoch + 1,
                };
                let member = Member {
                    addrs: addrs.clone(),
                    incarnation: *incarnation,
                    joined,
                };
                (peer, Some(member))
            }
            Change::Remove { peer, incarnation } => {
                let Ok(peer) = peer.parse::<PeerId>() else {
                    return false;
                };
                if !self.holds(&peer, *incarnation) {
                    return false;
                }
                (peer, None)
            }
        };
        // Only a join of a new peer or a removal changes the set of members;
        // only then is the set before it copied into the past.
        if entry.is_some() != self.members.contains_key(&peer) {
            let before: Arc<[PeerId]> = self.members.keys().copied().collect();
            self.past.push_front(Past {
                since: self.since,
                members: before,
            });
            self.past.truncate(PAST);
            self.since = self.epoch + 1;
        }
        match entry {
            Some(member) => self.members.insert(peer, Arc::new(member)),
            None => self.members.remove(&peer),
        };
        self.epoch += 1;
        self.recent.push_back(peer);
        if self.recent.len() > RECENT {
            self.recent.pop_front();
        }
        true
    }
}

/// A map of `peers`, joined in order, the i-th with incarnation i.
#[cfg(test)]
pub(crate) fn map_of(peers: &[PeerId]) -> Map {
    let mut map = Map::default();
    for (i, peer) in peers.iter().enumerate() {
        map.apply(&Change::Join {
            peer: peer.to_string(),
            addrs: vec![],
            incarnation: i as u64,
        });
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(peer: PeerId, incarnation: u64) -> Change {
        Change::Join {
            peer: peer.to_string(),
            addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
            incarnation,
        }
    }

    #[test]
    fn every_change_is_one_epoch_and_repeats_change_nothing() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut map = Map::default();
        assert!(map.apply(&join(a, 1)));
        assert!(map.apply(&join(b, 7)));
        assert_eq!(map.epoch(), 2);
        assert!(!map.apply(&join(a, 1)), "the same join twice");
        assert_eq!(map.epoch(), 2);
        assert_eq!(map.member(&b).map(|m| m.joined), Some(2));
    }

    #[test]
    fn a_restarted_member_is_a_new_incarnation_and_an_old_removal_spares_it() {
        let a = PeerId::random();
        let mut map = Map::default();
        map.apply(&join(a, 1));
        assert!(map.apply(&join(a, 2)), "a new incarnation is a change");
        assert_eq!(
            map.member(&a).map(|m| (m.incarnation, m.joined)),
            Some((2, 2))
        );
        let stale = Change::Remove {
            peer: a.to_string(),
            incarnation: 1,
        };
        assert!(!map.apply(&stale));
        assert!(map.member(&a).is_some());
        assert!(map.apply(&Change::Remove {
            peer: a.to_string(),
            incarnation: 2
        }));
        assert!(map.is_empty());
        assert_eq!(map.epoch(), 3);
    }

    #[test]
    fn the_map_remembers_earlier_member_sets_not_address_changes() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut map = Map::default();
        map.apply(&join(a, 1));
        map.apply(&join(b, 1));
        assert_eq!(map.since(), 2);
        map.apply(&Change::Join {
            peer: b.to_string(),
            addrs: vec!["/ip4/127.0.0.1/tcp/2".into()],
            incarnation: 1,
        });
        assert_eq!((map.epoch(), map.since()), (3, 2), "same members");
        map.apply(&Change::Remove {
            peer: a.to_string(),
            incarnation: 1,
        });
        let past: Vec<(u64, usize)> = map.past().map(|p| (p.since, p.members.len())).collect();
        assert_eq!(past, [(2, 2), (1, 1), (0, 0)]);
        for i in 0..40 {
            map.apply(&join(PeerId::random(), i));
        }
        assert_eq!(map.past().count(), PAST);
        let bytes = {
            let mut out = Vec::new();
            ciborium::into_writer(&map, &mut out).unwrap();
            out
        };
        let back: Map = ciborium::from_reader(bytes.as_slice()).unwrap();
        assert_eq!(back, map);
    }

    #[test]
    fn a_map_names_the_members_recent_changes_touched() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut map = Map::default();
        map.apply(&join(a, 1));
        map.apply(&join(b, 1));
        assert!(!map.apply(&join(a, 1)), "no change, no epoch, not touched");
        map.apply(&Change::Remove {
            peer: a.to_string(),
            incarnation: 1,
        });
        let touched = |map: &Map, epoch| {
            map.touched_since(epoch)
                .map(|t| t.copied().collect::<Vec<_>>())
        };
        assert_eq!(touched(&map, 0), Some(vec![a, b, a]));
        assert_eq!(touched(&map, 2), Some(vec![a]));
        assert_eq!(touched(&map, 3), Some(vec![]));
        assert_eq!(touched(&map, 4), None, "an epoch this map has not reached");

        for i in 0..RECENT as u64 {
            map.apply(&join(b, 2 + i));
        }
        assert_eq!(touched(&map, 3).map(|t| t.len()), Some(RECENT));
        assert_eq!(touched(&map, 2), None, "forgotten");

        let mut bytes = Vec::new();
        ciborium::into_writer(&map, &mut bytes).unwrap();
        let whole: Map = ciborium::from_reader(bytes.as_slice()).unwrap();
        assert_eq!(whole, map, "the record is not agreed state");
        assert_eq!(touched(&whole, map.epoch() - 1), None, "read whole");
        assert_eq!(touched(&whole, map.epoch()), Some(vec![]));
    }

    #[test]
    fn garbage_from_a_peer_changes_nothing() {
        let mut map = Map::default();
        let bad = Change::Join {
            peer: "not a peer id".into(),
            addrs: vec![],
            incarnation: 0,
        };
        assert!(!map.apply(&bad));
        assert_eq!(map, Map::default());
    }

    #[test]
    fn the_map_round_trips_through_cbor_and_refuses_bad_ids() {
        let mut map = Map::default();
        map.apply(&join(PeerId::random(), 3));
        let mut bytes = Vec::new();
        ciborium::into_writer(&map, &mut bytes).unwrap();
        let back: Map = ciborium::from_reader(bytes.as_slice()).unwrap();
        assert_eq!(back, map);

        let wire = MapWire {
            epoch: 1,
            members: [(
                "garbage".to_string(),
                Member {
                    addrs: vec![],
                    incarnation: 0,
                    joined: 1,
                },
            )]
            .into(),
            since: 1,
            past: vec![],
        };
        let mut bytes = Vec::new();
        ciborium::into_writer(&wire, &mut bytes).unwrap();
        assert!(ciborium::from_reader::<Map, _>(bytes.as_slice()).is_err());
    }
}
