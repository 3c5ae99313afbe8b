//! The membership map: which nodes are members, at which epoch. It is the
//! state Raft replicates; every change to it is one log entry and one epoch.
//! Pure data, no I/O.

use std::collections::{BTreeMap, VecDeque};

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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "MapWire", into = "MapWire")]
pub struct Map {
    epoch: u64,
    members: BTreeMap<PeerId, Member>,
    /// The epoch at which the current set of members began.
    since: u64,
    /// The earlier sets of members, newest first, each with the epoch at
    /// which it began; at most [`PAST`]. Part of the agreed state, so every
    /// node (a newcomer too) knows where a key lived before: peering needs it.
    past: VecDeque<Past>,
}

/// An earlier set of members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Past {
    /// The epoch at which this set began.
    pub since: u64,
    /// Its members.
    pub members: Vec<PeerId>,
}

/// How many earlier member sets a map remembers.
pub const PAST: usize = 16;

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
                .map(|(peer, member)| (peer.to_string(), member))
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
            .map(|(peer, member)| Ok((parse_peer(&peer)?, member)))
            .collect::<Result<_, String>>()?;
        let past = wire
            .past
            .into_iter()
            .take(PAST)
            .map(|(since, members)| {
                let members = members
                    .iter()
                    .map(|p| parse_peer(p))
                    .collect::<Result<_, _>>()?;
                Ok(Past { since, members })
            })
            .collect::<Result<_, String>>()?;
        Ok(Map {
            epoch: wire.epoch,
            members,
            since: wire.since,
            past,
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
        self.members.iter()
    }

    /// The member `peer`, if it is one.
    pub fn member(&self, peer: &PeerId) -> Option<&Member> {
        self.members.get(peer)
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
        let before: Vec<PeerId> = self.members.keys().copied().collect();
        let changed = match change {
            Change::Join {
                peer,
                addrs,
                incarnation,
            } => {
                let Ok(peer) = peer.parse::<PeerId>() else {
                    return false;
                };
                match self.members.get(&peer) {
                    Some(m) if m.incarnation == *incarnation && m.addrs == *addrs => false,
                    Some(m) if m.incarnation == *incarnation => {
                        let joined = m.joined;
                        self.members.insert(
                            peer,
                            Member {
                                addrs: addrs.clone(),
                                incarnation: *incarnation,
                                joined,
                            },
                        );
                        true
                    }
                    _ => {
                        self.members.insert(
                            peer,
                            Member {
                                addrs: addrs.clone(),
                                incarnation: *incarnation,
                                joined: self.epoch + 1,
                            },
                        );
                        true
                    }
                }
            }
            Change::Remove { peer, incarnation } => {
                let Ok(peer) = peer.parse::<PeerId>() else {
                    return false;
                };
                match self.members.get(&peer) {
                    Some(m) if m.incarnation == *incarnation => {
                        self.members.remove(&peer);
                        true
                    }
                    _ => false,
                }
            }
        };
        if changed {
            self.epoch += 1;
            if !self.members.keys().copied().eq(before.iter().copied()) {
                self.past.push_front(Past {
                    since: self.since,
                    members: before,
                });
                self.past.truncate(PAST);
                self.since = self.epoch;
            }
        }
        changed
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
